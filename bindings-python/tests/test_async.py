"""The asyncio API: every network call has an awaitable twin on the same objects, sharing the
same token cache, and gives the same results as the blocking one."""

from __future__ import annotations

import asyncio
import datetime

import cibmtr_fhir as cf

from conftest import LABS_CSV, follow_login, lab


def test_async_twins_of_the_cibmtr_workflow(sb: cf.Sandbox, okta: dict) -> None:
    client = sb.cibmtr_client()
    auth = sb.password_grant()

    async def main() -> None:
        token = await auth.atoken()
        assert token == auth.token()
        crid = await client.aregister_crid("Jane", "Doe", datetime.date(1970, 1, 31), "F")
        assert crid == client.register_crid("Jane", "Doe", "1970-01-31", "F")
        # 20 concurrent ensure_patient calls: one Patient.
        ids = await asyncio.gather(*(client.aensure_patient(crid) for _ in range(20)))
        assert len(set(ids)) == 1 and ids[0] == client.ensure_patient(crid)
        one = await client.asubmit_lab(crid, "718-7", 12.5, "g/dL", "2024-05-01T08:30:00-05:00")
        assert one.status == "created"
        assert client.submit_lab(crid, lab(12.5)).status == "already_present"
        report = await client.asubmit_labs(crid, [lab(12.5)] + [lab(float(v)) for v in range(1, 20)], concurrency=4)
        assert (report.created, report.already_present) == (19, 1)
        csv = await client.asubmit_labs(crid, LABS_CSV)
        assert (csv.created, csv.failed) == (14, 1) and csv.failures()[0]["line"] == 16
        obs = await client.aobservations(crid)
        assert len(obs) == 34 and obs == client.observations(crid)

    asyncio.run(main())
    # The blocking and the async calls shared one token.
    assert sb.token_requests(okta["client_id"]) == 1


def test_async_twins_of_the_fhir_client(sb: cf.Sandbox) -> None:
    c = sb.credentials["msk"]
    auth = cf.ClientCredentials(c["token_url"], c["client_id"], c["client_secret"], scope="full")
    fhir = cf.FhirClient(sb.urls["msk_fhir"], auth, default_params={"researchstudy": "s1"})

    async def main() -> None:
        created = await asyncio.gather(
            *(fhir.acreate({"resourceType": "Patient", "id": None, "gender": "other"}) for _ in range(25))
        )
        ids = {p["id"] for p in created}
        assert len(ids) == 25
        first = sorted(ids)[0]
        assert await fhir.aread("Patient", first) == fhir.read("Patient", first)
        streamed = [p["id"] async for p in fhir.asearch("Patient", {"_count": "10"})]
        assert set(streamed) == ids == {p["id"] for p in fhir.search("Patient", [("_count", 10)])}
        assert {p["id"] for p in await fhir.asearch_all("Patient")} == ids
        page = await fhir.asearch_page("Patient", {"_count": 10})
        assert page["resourceType"] == "Bundle" and len(page["entry"]) == 10
        nxt = await fhir.anext_page(page)
        assert nxt is not None and nxt == fhir.next_page(page)
        resource, was_created = await fhir.acreate_if_none_exist(
            {"resourceType": "Patient", "identifier": [{"system": "urn:t", "value": "1"}]}, "identifier=urn:t|1"
        )
        assert was_created
        again, was_created = fhir.create_if_none_exist(
            {"resourceType": "Patient", "identifier": [{"system": "urn:t", "value": "1"}]}, "identifier=urn:t|1"
        )
        assert not was_created and again["id"] == resource["id"]
        resource["gender"] = "unknown"
        assert (await fhir.aupdate(resource))["gender"] == "unknown"
        assert (await fhir.acapabilities())["resourceType"] == "CapabilityStatement"
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}}
        ]}
        # This store takes no transactions: both twins raise the same error.
        statuses = []
        for call in (lambda: fhir.atransaction(bundle), lambda: asyncio.sleep(0, fhir.transaction(bundle))):
            try:
                await call()
            except cf.HttpError as e:
                statuses.append(e.status)
        assert statuses == [404, 404]

    asyncio.run(main())


def test_async_authorization_code_and_registration(sb: cf.Sandbox) -> None:
    smart = sb.credentials["smart"]

    async def main() -> None:
        reg = await cf.aregister_client(smart["registration_url"], "async app", ["http://127.0.0.1:9/a"], smart["scope"])
        pub = await cf.aregister_public_client(smart["registration_url"], "pub", ["http://127.0.0.1:9/p"], smart["scope"])
        assert reg.client_secret and pub.client_secret is None
        auth = cf.AuthorizationCode(reg.client_id, "http://127.0.0.1:9/a", smart["scope"],
                                    client_secret=reg.client_secret, fhir_base=smart["fhir_base"])
        url = await auth.aauthorization_url()
        back = await asyncio.get_running_loop().run_in_executor(None, follow_login, url)
        await auth.acomplete(back)
        assert await auth.atoken() == auth.token()
        assert auth.context["patient"] == smart["patient"]

    asyncio.run(main())


def test_cancelling_an_awaitable_cancels_the_call(sb: cf.Sandbox, okta: dict) -> None:
    sb.set_fault("okta_token", delay=2.0)
    auth = sb.password_grant()

    async def main() -> None:
        task = asyncio.ensure_future(auth.atoken())
        await asyncio.sleep(0.2)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return
        raise AssertionError("the token request was not cancelled")

    asyncio.run(main())
    sb.clear_faults()
    assert auth.token()
