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
    row = tab.page.locator("#finding-rows tr", has=tab.page.locator("td.sev-high")).first
    title = row.locator("th").inner_text()
    link = row.get_by_role("link")
    seqs = [v for k, v in parse_qsl(urlsplit(link.get_attribute("href")).query) if k == "seq"]
    link.click()
    tab.page.wait_for_load_state("load")
    shown = tab.page.locator("#events-table tbody tr th").all_inner_texts()
    assert shown and sorted(shown) == sorted(seqs), (title, seqs, shown)
    tab.check("audit-evidence")


def test_an_auditor_verifies_the_whole_ledger_and_sees_its_progress_then_what_was_checked(dashboard):
    tab = dashboard.sign_in("tesla-auditor")
    tab.visit("/ui/audit")
    if tab.page.locator("[data-verdict]").get_attribute("data-verdict") == "unverified":
        assert "no full verification is on record" in tab.page.locator("#checked").inner_text()
    with tab.page.expect_navigation(wait_until="load"):
        tab.page.get_by_role("button", name="Verify the whole ledger now").click()
    assert tab.page.locator("#job").count() == 1  # the job's progress (or, quick, its result)
    tab.page.wait_for_selector('#job[data-state="succeeded"]', timeout=120_000)
    assert tab.page.locator("[data-verdict]").get_attribute("data-verdict") == "verified"
    job_id = dict(parse_qsl(urlsplit(tab.page.url).query))["job"]
    assert f"verified in full by verify job {job_id} of tesla-auditor" in tab.page.locator("#checked").inner_text()
    tab.check("audit-verified")


MY_PAGES = ["fleet", "sites", "loans", "audit", "events"]


def test_every_page_passes_the_checks_for_a_viewer(dashboard):
    tab = dashboard.sign_in("tesla-viewer")
    for page in MY_PAGES:
        tab.visit(f"/ui/{page}?as_of=2024-12-31")
        tab.check(f"{page}-viewer")
        assert tab.page.locator('a[aria-current="page"]').inner_text() == tab.page.locator(
            f'nav a[href^="/ui/{page}"]').inner_text()


def test_a_viewer_of_one_entity_cannot_read_another_by_editing_the_url(dashboard):
    tab = dashboard.sign_in("tesla-viewer")
    for path in ("/ui/fleet?entity=x", "/ui/sites?entity=xai", "/ui/events?entity=x", "/ui/audit?entity=xai"):
        tab.visit(path, expect=403)
        assert "Not allowed" in tab.page.inner_text("h1") and "tesla-viewer" in tab.page.inner_text("main")
    tab.visit("/ui/fleet?entity=nowhere", expect=404)
    for path in ("/ui/fleet", "/ui/sites", "/ui/events?type=site_registered", "/ui/events?type=lot_delivered"):
        tab.visit(path)
        text = tab.page.inner_text("main")
        assert "x-cluster" not in text and "colossus" not in text, path
    tab.visit("/ui/audit")
    assert "Findings are the auditors'" in tab.page.inner_text("main")


def test_an_operator_records_a_failure_and_sees_the_fleet_page_change(dashboard):
    tab = dashboard.sign_in("tesla-operator")
    tab.visit("/ui/fleet")
    failed = tab.page.locator(".cards li", has_text="failed").locator(".big")
    before = int(failed.inner_text().split()[0].replace(",", ""))
    tab.page.get_by_label("Where").select_option("tesla-dc")
    tab.page.get_by_label("GPUs", exact=True).fill("1200")
    with tab.page.expect_navigation(wait_until="load"):
        tab.page.get_by_role("button", name="Record failure").click()
    tab.wait_for_charts()
    assert tab.page.locator("h1").inner_text() == "Fleet", tab.page.inner_text("main")[:900]
    assert "1,200 h100 GPUs of tesla failed" in tab.page.get_by_role("status").inner_text()
    assert int(failed.inner_text().split()[0].replace(",", "")) == before + 1200
    tab.check("fleet-after-failure", charts=1)
    viewer = dashboard.sign_in("tesla-viewer")
    viewer.visit("/ui/fleet")
    assert viewer.page.get_by_role("button", name="Record failure").count() == 0  # not offered to a viewer
    refused = viewer.page.request.post(dashboard.server.url + "/ui/fleet/failures", form={
        "csrf": viewer.page.locator('input[name="csrf"]').first.get_attribute("value"),
        "owner": "tesla", "model": "h100", "site": "tesla-dc", "gpus": "1"}, max_redirects=0)
    assert refused.status == 403 and "needs the role operator" in refused.text()  # and the server refuses it


def test_a_form_without_its_csrf_token_is_refused(dashboard):
    tab = dashboard.sign_in("tesla-operator")
    tab.visit("/ui/fleet")
    form = {"owner": "tesla", "model": "h100", "site": "tesla-dc", "gpus": "1"}
    for extra in ({}, {"csrf": "forged"}):
        answer = tab.page.request.post(dashboard.server.url + "/ui/fleet/failures", form=form | extra,
                                       max_redirects=0)
        assert answer.status == 403 and "CSRF" in answer.text()
    answer = tab.page.request.post(dashboard.server.url + "/ui/logout", form={}, max_redirects=0)
    assert answer.status == 403
    tab.visit("/ui/fleet")  # still signed in


def test_sign_in_with_a_bad_token_is_refused_and_sign_out_ends_the_session(dashboard):
    tab = dashboard.new_tab()
    tab.visit("/ui/fleet?as_of=2024-06-30")
    assert "/ui/login" in tab.page.url  # signed out: the sign-in form, which returns here
    for token in ("gpf_0000000000000000_nope", dashboard.world.tokens["revoked"]):
        tab.allowed_status = {401}
        tab.page.get_by_label("API token").fill(token)
        with tab.page.expect_navigation(wait_until="load"):
            tab.page.get_by_role("button", name="Sign in").click()
        assert "Sign-in refused" in tab.page.get_by_role("alert").inner_text()
        assert not [c for c in tab.page.context.cookies() if c["name"] == "gpufleet_session"]
    tab.page.get_by_label("API token").fill(dashboard.world.tokens["xai-viewer"])
    with tab.page.expect_navigation(wait_until="load"):
        tab.page.get_by_role("button", name="Sign in").click()
    assert tab.page.url.endswith("/ui/fleet?as_of=2024-06-30")
    cookie = next(c for c in tab.page.context.cookies() if c["name"] == "gpufleet_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert dashboard.world.tokens["xai-viewer"].split("_")[2] not in str(cookie)  # never the token's secret
    with tab.page.expect_navigation(wait_until="load"):
        tab.page.get_by_role("button", name="Sign out").click()
    assert "You are signed out" in tab.page.inner_text("main")
    tab.visit("/ui/events")
    assert "/ui/login" in tab.page.url
