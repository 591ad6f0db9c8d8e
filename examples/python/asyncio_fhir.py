"""The asyncio API and the generic FHIR client, against the local sandbox.

Every network call has an awaitable twin with an ``a`` prefix on the same object (one token
cache for both): ``await auth.atoken()``, ``await fhir.acreate(...)``,
``async for r in fhir.asearch(...)``, ``await client.asubmit_labs(...)``.

    python examples/python/asyncio_fhir.py
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any, Dict, List

import cibmtr_fhir as cf


async def msk_store(sb: cf.Sandbox) -> int:
    """MSK's Blaze: client credentials, and `researchstudy` on every request."""
    c = sb.credentials["msk"]
    auth = cf.ClientCredentials(c["token_url"], c["client_id"], c["client_secret"], scope="full")
    fhir = cf.FhirClient(sb.urls["msk_fhir"], auth, default_params={"researchstudy": "study-1"})
    created = await asyncio.gather(
        *(fhir.acreate({"resourceType": "Patient", "gender": g}) for g in ("female", "male") * 10)
    )
    ids: List[str] = [str(p["id"]) for p in created]
    found = [p async for p in fhir.asearch("Patient", {"_count": 5})]  # pages followed
    print(f"MSK: created {len(ids)} Patients, found {len(found)} in pages of 5, "
          f"{auth.stats()['token_requests']} token request")
    return len(found)


async def aidbox_with_a_new_key(sb: cf.Sandbox) -> str:
    """SMART Backend Services with a key made here and registered with the server."""
    key = cf.generate_key("ES384")
    sb.register_backend_client("example-backend", key.jwks)
    auth = cf.BackendServices(
        "example-backend", key.private_pem, fhir_base=sb.urls["fhir_base"], algorithm="ES384"
    )
    fhir = cf.FhirClient(sb.urls["aidbox_fhir"], auth)
    patient: Dict[str, Any] = await fhir.acreate({"resourceType": "Patient", "gender": "other"})
    print(f"Aidbox: Patient/{patient['id']} with key {key.key_id[:12]}..., token URL discovered: "
          f"{auth.token_url}")
    return str(patient["id"])


async def cibmtr(sb: cf.Sandbox) -> int:
    client = sb.cibmtr_client()
    crid = await client.aregister_crid("Jane", "Doe", "1970-01-31", "F")
    labs = [
        {"loinc": "718-7", "value": 10 + i / 10, "unit": "g/dL", "effective": f"2024-05-{i + 1:02d}T08:00:00Z"}
        for i in range(20)
    ]
    report = await client.asubmit_labs(crid, labs, concurrency=8)
    print(f"CIBMTR: {report}")
    return report.created


async def main() -> int:
    with cf.Sandbox() as sb:
        results = await asyncio.gather(msk_store(sb), aidbox_with_a_new_key(sb), cibmtr(sb))
    return 0 if results[0] == 20 and results[2] == 20 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
