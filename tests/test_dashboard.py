"""The dashboard (docs/dashboard.md) in a real browser: sign-in, the Fleet, Sites, Loans and swaps, Audit
and Events pages for an auditor and for a viewer, an operator's failure, an auditor following a finding to
its evidence, a viewer who cannot read another entity by editing the URL, CSRF, sign-out."""

from __future__ import annotations

from dashboard_browser import dashboard  # noqa: F401  (the module's server and browser)


def test_fleet_page_for_an_auditor(dashboard):
    tab = dashboard.sign_in("tesla-auditor")
    tab.visit("/ui/fleet")
    tab.check("fleet-auditor", charts=1)


def test_sites_page_for_an_auditor(dashboard):
    tab = dashboard.sign_in("tesla-auditor")
    tab.visit("/ui/sites")
    tab.check("sites-auditor", charts=1)
