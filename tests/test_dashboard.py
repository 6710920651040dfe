"""The dashboard (docs/dashboard.md) in a real browser: sign-in, the Fleet, Sites, Loans and swaps, Audit
and Events pages for an auditor and for a viewer, an operator's failure, an auditor following a finding to
its evidence, a viewer who cannot read another entity by editing the URL, CSRF, sign-out."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from dashboard_browser import dashboard  # noqa: F401  (the module's server and browser)


def test_fleet_page_for_an_auditor(dashboard):
    tab = dashboard.sign_in("tesla-auditor")
    tab.visit("/ui/fleet")
    tab.check("fleet-auditor", charts=1)


def test_sites_page_for_an_auditor(dashboard):
    tab = dashboard.sign_in("tesla-auditor")
    tab.visit("/ui/sites")
    tab.check("sites-auditor", charts=1)


def test_loans_and_events_pages_for_an_auditor(dashboard):
    tab = dashboard.sign_in("tesla-auditor")
    tab.visit("/ui/loans")
    tab.check("loans-auditor", charts=1)
    tab.page.get_by_role("link", name="events of swap:dec-2023-h100").click()
    tab.page.wait_for_load_state("load")
    assert "subject=swap%3Adec-2023-h100" in tab.page.url
    assert tab.page.locator("#events-table tbody tr").count() >= 1
    tab.check("events-auditor")


def test_an_auditor_opens_a_finding_and_follows_it_to_its_evidence(dashboard):
    tab = dashboard.sign_in("x-auditor")
    tab.visit("/ui/audit")
    tab.check("audit-auditor")
    row = tab.page.locator("tr", has=tab.page.locator("td.sev-high")).first
    title = row.locator("th").inner_text()
    link = row.get_by_role("link")
    seqs = [v for k, v in parse_qsl(urlsplit(link.get_attribute("href")).query) if k == "seq"]
    link.click()
    tab.page.wait_for_load_state("load")
    shown = tab.page.locator("#events-table tbody tr th").all_inner_texts()
    assert shown and sorted(shown) == sorted(seqs), (title, seqs, shown)
    tab.check("audit-evidence")
