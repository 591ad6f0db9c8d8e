"""cibmtr-fhir: report to CIBMTR and talk to SMART on FHIR servers.

The Rust core of the SDK with Python names. Every network call exists twice on the same
objects: blocking (``auth.token()``, ``client.submit_labs(...)``), which releases the GIL and never
touches asyncio, so it works in scripts, from many threads and inside Jupyter's running event
loop; and awaitable, with an ``a`` prefix (``await auth.atoken()``, ``await
client.asubmit_labs(...)``, ``async for r in fhir.asearch(...)``). Both share one token cache.

Resources go in and out as plain dicts. Errors are ``CibmtrFhirError`` subclasses:
``ValidationError`` (``.field``, ``.rule``), ``AuthError`` (``.error``, ``.description``),
``RateLimitedError`` (``.retry_after``), ``HttpError`` (``.status``, ``.outcome``),
``NetworkError`` and ``ConfigError``. The core's log events reach the ``cibmtr_fhir`` logger.

Timeouts, a proxy, extra CA certificates and retry bounds are an ``HttpConfig``, given as
``http=`` to any flow, client or registration (``cf.PasswordGrant(..., http=cf.HttpConfig(timeout=10,
proxy="http://proxy.hospital.org:3128", ca_files="hospital-ca.pem"))``).
"""

from __future__ import annotations

import errno
import os
import warnings
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Union

from . import _native
from ._native import (
    AuthError,
    AuthorizationCode,
    BackendServices,
    CibmtrFhirError,
    ClientCredentials,
    ConfigError,
    FhirClient,
    GeneratedKey,
    HttpConfig,
    HttpError,
    Journal,
    LabResult,
    LabSubmission,
    NetworkError,
    PasswordGrant,
    RateLimitedError,
    RegisteredClient,
    ResourceIterator,
    SubmissionReport,
    TokenProvider,
    ValidationError,
    aregister_client,
    aregister_public_client,
    environment_urls,
    generate_key,
    lab_catalog,
    lab_for_code,
    public_jwks,
    register_client,
    register_public_client,
)

__version__: str = _native.__version__

__all__ = [
    "AuthError",
    "AuthorizationCode",
    "BackendServices",
    "CibmtrClient",
    "CibmtrFhirError",
    "ClientCredentials",
    "ConfigError",
    "FhirClient",
    "GeneratedKey",
    "HttpConfig",
    "HttpError",
    "Journal",
    "LabInput",
    "LabResult",
    "LabSubmission",
    "NetworkError",
    "PasswordGrant",
    "Progress",
    "RateLimitedError",
    "RegisteredClient",
    "ResourceIterator",
    "Sandbox",
    "SubmissionReport",
    "TokenProvider",
    "ValidationError",
    "aregister_client",
    "aregister_public_client",
    "environment_urls",
    "generate_key",
    "lab_catalog",
    "lab_for_code",
    "public_jwks",
    "register_client",
    "register_public_client",
]

#: One lab: a ``LabResult`` or a dict with its fields.
LabInput = Union[LabResult, Mapping[str, Any]]
#: ``{"done", "total", "created", "already_present", "failed"}``, after every item.
Progress = Callable[[Dict[str, int]], Any]
#: What ``submit_labs`` takes: labs, a pandas DataFrame, or the path of a CSV file.
Labs = Union[Iterable[LabInput], "os.PathLike[str]", str, Any]


def _records(labs: Any) -> Optional[List[Dict[str, Any]]]:
    """A pandas DataFrame as a list of dicts (missing cells as None), else None."""
    if type(labs).__module__.split(".")[0] != "pandas" or not hasattr(labs, "to_dict"):
        return None
    frame = labs.astype(object).where(labs.notna(), None)
    return frame.to_dict("records")  # type: ignore[no-any-return]


@contextmanager
def _progress_callback(progress: Union[bool, Progress, None]) -> Iterator[Optional[Progress]]:
    """``progress=True``: a tqdm bar when tqdm is installed; a callable is used as it is."""
    if progress is None or progress is False:
        yield None
        return
    if callable(progress):
        yield progress
        return
    try:
        from tqdm.auto import tqdm  # type: ignore[import-untyped, unused-ignore]
    except ImportError:
        warnings.warn(
            "progress=True shows a bar only when tqdm is installed (pip install tqdm); "
            "pass a callable to receive progress instead",
            stacklevel=4,
        )
        yield None
        return
    bar = tqdm(total=None, unit="lab", desc="labs")

    def update(p: Dict[str, int]) -> None:
        if bar.total != p["total"]:
            bar.total = p["total"]
        bar.set_postfix(
            created=p["created"], present=p["already_present"], failed=p["failed"], refresh=False
        )
        bar.update(p["done"] - bar.n)

    try:
        yield update
    finally:
        bar.close()


class CibmtrClient(_native.CibmtrClient):
    """A client of CIBMTR's Direct FHIR Service API for one transplant centre (CCN).

    ``CibmtrClient(ccn, auth, environment="test", base_url=None, *, fhir_path=None,
    uri_family="cibmtr", fhir_version="STU3", strict=False, convert_units=False, http=None)``;
    ``http``: an ``HttpConfig`` (timeouts, proxy, CA files, retry bounds) for its requests.
    ``submit_labs`` here also takes a pandas DataFrame or a CSV path and shows a tqdm bar with
    ``progress=True``.
    """

    __slots__ = ()

    def submit_labs(
        self,
        crid: int,
        labs: Labs,
        *,
        concurrency: int = 8,
        progress: Union[bool, Progress, None] = False,
        use_bundles: bool = False,
        bundle_size: int = 50,
        journal: Optional[Union[str, "os.PathLike[str]"]] = None,
        resume: Optional[str] = None,
    ) -> SubmissionReport:
        """Submits many labs for one recipient and reports on every item.

        ``labs``: an iterable of dicts or ``LabResult``s, a pandas DataFrame (one row per lab,
        columns named like the ``LabResult`` fields), or the path of a CSV file
        (``loinc,value,unit,effective[,reference_low,reference_high,comparator,status,display,crid]``).
        ``progress``: ``True`` for a tqdm bar, or a callable receiving
        ``{"done", "total", "created", "already_present", "failed"}`` after every item.
        Items already on the server or repeated in the input are not sent again.
        ``journal``: a SQLite file that records every item before and after its request (the
        report's ``batch_id`` names the batch); ``resume``: a ``batch_id`` of that journal to
        continue after an interruption, sending nothing the journal or the server already holds.
        Read the journal with ``cibmtr_fhir.Journal(path)``, not ``sqlite3``.
        A CSV path that does not exist raises ``FileNotFoundError`` before anything is sent.
        """
        with _progress_callback(progress) as callback:
            opts = dict(
                concurrency=concurrency,
                progress=callback,
                use_bundles=use_bundles,
                bundle_size=bundle_size,
                journal=journal,
                resume=resume,
            )
            if isinstance(labs, (str, os.PathLike)):
                return super().submit_labs_csv(crid, _existing(labs), **opts)  # type: ignore[arg-type]
            rows = _records(labs)
            return super().submit_labs(crid, rows if rows is not None else labs, **opts)  # type: ignore[arg-type]

    async def asubmit_labs(
        self,
        crid: int,
        labs: Labs,
        *,
        concurrency: int = 8,
        progress: Union[bool, Progress, None] = False,
        use_bundles: bool = False,
        bundle_size: int = 50,
        journal: Optional[Union[str, "os.PathLike[str]"]] = None,
        resume: Optional[str] = None,
    ) -> SubmissionReport:
        """``await client.asubmit_labs(...)``: ``submit_labs`` for asyncio."""
        with _progress_callback(progress) as callback:
            opts = dict(
                concurrency=concurrency,
                progress=callback,
                use_bundles=use_bundles,
                bundle_size=bundle_size,
                journal=journal,
                resume=resume,
            )
            if isinstance(labs, (str, os.PathLike)):
                return await super().asubmit_labs_csv(crid, _existing(labs), **opts)  # type: ignore[arg-type]
            rows = _records(labs)
            return await super().asubmit_labs(crid, rows if rows is not None else labs, **opts)  # type: ignore[arg-type]


def _existing(path: Union[str, "os.PathLike[str]"]) -> Union[str, "os.PathLike[str]"]:
    """``path``, if something is there; else ``FileNotFoundError``, as ``open()`` raises it."""
    if not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), os.fspath(path))
    return path


class Sandbox(_native.Sandbox):
    """The local emulator of Okta, MSK's Blaze, a SMART authorization server and CIBMTR's
    Direct FHIR API, on 127.0.0.1. Use it as a context manager (``with cf.Sandbox() as sb:``)
    or call ``stop()``.
    """

    __slots__ = ()

    def password_grant(self, *, http: Optional[HttpConfig] = None) -> PasswordGrant:
        """A ``PasswordGrant`` with the sandbox's Okta test credentials (``http`` as for
        ``PasswordGrant``)."""
        c = self.credentials["okta"]
        return PasswordGrant(
            c["token_url"],
            c["client_id"],
            c["client_secret"],
            c["username"],
            c["password"],
            scope=c["scope"],
            http=http,
        )

    def cibmtr_client(self, ccn: str = "12345", **options: Any) -> CibmtrClient:
        """A ``CibmtrClient`` for the sandbox's CIBMTR API, authenticating with its Okta
        credentials (``options`` as for ``CibmtrClient``; an ``http`` config serves the token
        requests too)."""
        auth = self.password_grant(http=options.get("http"))
        return CibmtrClient(ccn, auth, base_url=self.urls["cibmtr_base"], **options)

    def __enter__(self) -> "Sandbox":
        return self
