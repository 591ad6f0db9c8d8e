"""Quick start: the whole CIBMTR workflow from Python, against the local sandbox.

    pip install cibmtr-fhir          # from a checkout: bash scripts/test-python.sh builds it
    python examples/python/quickstart.py

With real credentials, replace the sandbox's URLs and credentials by yours
(``cf.environment_urls("test")`` gives CIBMTR's test token URL and API base).
"""

from __future__ import annotations

import datetime
import pathlib
import sys

import cibmtr_fhir as cf

LABS_CSV = pathlib.Path(__file__).resolve().parent.parent / "data" / "form2402-labs.csv"


def main() -> int:
    with cf.Sandbox() as sb:
        okta = sb.credentials["okta"]

        # HTTP settings (optional): timeouts in seconds, a proxy, extra CA certificates for a
        # TLS-inspecting proxy (ca_files="hospital-ca.pem"), retry bounds.
        http = cf.HttpConfig(timeout=30, connect_timeout=10, request_retries=4)

        # 1. Token: obtained once, cached, refreshed ahead of expiry, shared by every caller.
        auth = cf.PasswordGrant(
            okta["token_url"],
            okta["client_id"],
            okta["client_secret"],
            okta["username"],
            okta["password"],
            scope=okta["scope"],
            http=http,
        )
        for _ in range(1000):
            auth.token()
        print(f"1. 1,000 token() calls -> {auth.stats()['token_requests']} token request")

        client = cf.CibmtrClient("12345", auth, base_url=sb.urls["cibmtr_base"], http=http)

        # 2. CRID: validated before anything is sent; the same demographics give the same CRID.
        crid = client.register_crid(
            "Jane", "Doe", datetime.date(1970, 1, 31), "F", race=["2106-3"]
        )
        print(f"2. CRID {crid}")
        try:
            client.register_crid("Jane", "Doe", "1970-02-31", "F")
        except cf.ValidationError as e:
            print(f"   refused before sending: {e.field}: {e.rule}")

        # 3. The de-identified Patient: found before created, never duplicated.
        patient_id = client.ensure_patient(crid)
        assert client.ensure_patient(crid) == patient_id
        print(f"3. Patient/{patient_id}")

        # 4. One lab, with a timezone-aware datetime.
        when = datetime.datetime(2024, 5, 1, 8, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=-5)))
        one = client.submit_lab(crid, "718-7", 12.5, "g/dL", when, reference_range=(12.0, 16.0))
        print(f"4. one lab: {one.status} as Observation/{one.id}")

        # 5. A CSV file of labs: every row ends up in the report.
        report = client.submit_labs(crid, LABS_CSV, concurrency=8)
        print(f"5. {report}")
        for item in report.failures():
            print(f"   line {item['line']}: {item['error']['message']}")

        # 6. The same file again: nothing is sent twice.
        again = client.submit_labs(crid, LABS_CSV)
        print(f"6. again: {again.created} created, {again.already_present} already present")

        # 7. What CIBMTR holds for the recipient.
        observations = client.observations(crid)
        print(f"7. {len(observations)} Observations on the server")

        ok = report.created == 14 and again.created == 0 and len(observations) == 15
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
