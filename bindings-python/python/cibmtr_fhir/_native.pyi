"""Type stubs of the native module ``cibmtr_fhir._native`` (re-exported by ``cibmtr_fhir``)."""

import datetime
import os
import pathlib
from typing import (
    Any,
    AsyncIterator,
    Awaitable,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Literal,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from typing_extensions import Self, disjoint_base, final

__all__ = [
    "__version__",
    "CibmtrFhirError",
    "ValidationError",
    "AuthError",
    "RateLimitedError",
    "HttpError",
    "NetworkError",
    "ConfigError",
    "HttpConfig",
    "TokenProvider",
    "PasswordGrant",
    "ClientCredentials",
    "BackendServices",
    "AuthorizationCode",
    "RegisteredClient",
    "GeneratedKey",
    "register_client",
    "aregister_client",
    "register_public_client",
    "aregister_public_client",
    "generate_key",
    "public_jwks",
    "FhirClient",
    "ResourceIterator",
    "LabResult",
    "LabSubmission",
    "SubmissionReport",
    "CibmtrClient",
    "lab_catalog",
    "lab_for_code",
    "environment_urls",
    "Journal",
    "Sandbox",
]

__version__: str

_JsonDict = Dict[str, Any]
#: Search parameters: a dict (a list value repeats the parameter) or (name, value) pairs.
_Params = Union[Mapping[str, Any], Sequence[Tuple[str, Any]], None]
#: A point in time: ISO 8601 text with an offset, or a timezone-aware datetime.
_When = Union[str, datetime.datetime]
_StrPath = Union[str, "os.PathLike[str]"]
#: Where tokens are shared: a file path (one host), or a redis://, rediss:// or valkey:// URL
#: (a fleet of hosts; tokens sealed with the key in $CIBMTR_FHIR_STORE_KEY).
_TokenStore = Union[str, "os.PathLike[str]"]
_ProgressCallback = Callable[[Dict[str, int]], Any]
#: Seconds: an int, a float or a timedelta.
_Seconds = Union[float, datetime.timedelta]

# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------

class CibmtrFhirError(Exception):
    code: str
    message: str

class ValidationError(CibmtrFhirError, ValueError):
    field: str
    rule: str

class AuthError(CibmtrFhirError):
    error: str
    description: Optional[str]
    status: Optional[int]

class RateLimitedError(CibmtrFhirError):
    retry_after: Optional[float]

class HttpError(CibmtrFhirError):
    status: int
    outcome: Optional[_JsonDict]

class NetworkError(CibmtrFhirError): ...
class ConfigError(CibmtrFhirError): ...

# ---------------------------------------------------------------------------------------------
# HTTP settings
# ---------------------------------------------------------------------------------------------

@final
class HttpConfig:
    def __new__(
        cls,
        *,
        timeout: Optional[_Seconds] = None,
        connect_timeout: Optional[_Seconds] = None,
        proxy: Optional[str] = None,
        ca_files: Union[_StrPath, Sequence[_StrPath], None] = None,
        allow_http_hosts: Union[str, Sequence[str], None] = None,
        max_rate_limit_wait: Optional[_Seconds] = None,
        token_retries: Optional[int] = None,
        request_retries: Optional[int] = None,
        max_retry_time: Optional[_Seconds] = None,
    ) -> Self: ...
    @property
    def timeout(self) -> Optional[float]: ...
    @property
    def connect_timeout(self) -> Optional[float]: ...
    @property
    def proxy(self) -> Optional[str]: ...
    @property
    def ca_files(self) -> List[str]: ...
    @property
    def allow_http_hosts(self) -> List[str]: ...
    @property
    def max_rate_limit_wait(self) -> Optional[float]: ...
    @property
    def token_retries(self) -> Optional[int]: ...
    @property
    def request_retries(self) -> Optional[int]: ...
    @property
    def max_retry_time(self) -> Optional[float]: ...

# ---------------------------------------------------------------------------------------------
# Auth
# ---------------------------------------------------------------------------------------------

@disjoint_base
class TokenProvider:
    def token(self) -> str: ...
    def atoken(self) -> Awaitable[str]: ...
    def invalidate(self) -> None: ...
    def invalidate_token(self, token: str) -> bool: ...
    def stats(self) -> Dict[str, int]: ...

@final
class PasswordGrant(TokenProvider):
    def __new__(
        cls,
        token_url: str,
        client_id: str,
        client_secret: str,
        username: str,
        password: str,
        scope: Optional[str] = None,
        token_store: Optional[_TokenStore] = None,
        *,
        http: Optional[HttpConfig] = None,
    ) -> Self: ...

@final
class ClientCredentials(TokenProvider):
    def __new__(
        cls,
        token_url: str,
        client_id: str,
        client_secret: str,
        scope: Optional[str] = None,
        auth_method: Literal["client_secret_post", "client_secret_basic"] = "client_secret_post",
        token_store: Optional[_TokenStore] = None,
        *,
        http: Optional[HttpConfig] = None,
    ) -> Self: ...
    @property
    def auth_method(self) -> str: ...

@final
class BackendServices(TokenProvider):
    def __new__(
        cls,
        client_id: str,
        private_key: Union[str, Mapping[str, Any]],
        token_url: Optional[str] = None,
        fhir_base: Optional[str] = None,
        key_id: Optional[str] = None,
        algorithm: Literal["RS384", "ES384", "RS256"] = "RS384",
        scope: str = "system/*.read",
        token_store: Optional[_TokenStore] = None,
        *,
        http: Optional[HttpConfig] = None,
    ) -> Self: ...
    @property
    def key_id(self) -> str: ...
    @property
    def algorithm(self) -> str: ...
    @property
    def token_url(self) -> Optional[str]: ...

@final
class AuthorizationCode(TokenProvider):
    def __new__(
        cls,
        client_id: str,
        redirect_uri: str,
        scope: str,
        client_secret: Optional[str] = None,
        fhir_base: Optional[str] = None,
        authorize_url: Optional[str] = None,
        token_url: Optional[str] = None,
        token_store: Optional[_TokenStore] = None,
        session: Optional[str] = None,
        *,
        http: Optional[HttpConfig] = None,
    ) -> Self: ...
    def authorization_url(self) -> str: ...
    def aauthorization_url(self) -> Awaitable[str]: ...
    def complete(self, redirect_url: str) -> None: ...
    def acomplete(self, redirect_url: str) -> Awaitable[None]: ...
    @property
    def context(self) -> _JsonDict: ...
    def restore(
        self,
        access_token: str,
        *,
        expires_at: Union[datetime.datetime, float],
        refresh_token: Optional[str] = None,
    ) -> None: ...

@final
class RegisteredClient:
    @property
    def client_id(self) -> str: ...
    @property
    def client_secret(self) -> Optional[str]: ...

def register_client(
    registration_url: str,
    client_name: str,
    redirect_uris: List[str],
    scope: str,
    *,
    http: Optional[HttpConfig] = None,
) -> RegisteredClient: ...
def aregister_client(
    registration_url: str,
    client_name: str,
    redirect_uris: List[str],
    scope: str,
    *,
    http: Optional[HttpConfig] = None,
) -> Awaitable[RegisteredClient]: ...
def register_public_client(
    registration_url: str,
    client_name: str,
    redirect_uris: List[str],
    scope: str,
    *,
    http: Optional[HttpConfig] = None,
) -> RegisteredClient: ...
def aregister_public_client(
    registration_url: str,
    client_name: str,
    redirect_uris: List[str],
    scope: str,
    *,
    http: Optional[HttpConfig] = None,
) -> Awaitable[RegisteredClient]: ...

@final
class GeneratedKey:
    @property
    def private_pem(self) -> str: ...
    @property
    def key_id(self) -> str: ...
    @property
    def algorithm(self) -> str: ...
    @property
    def jwks(self) -> _JsonDict: ...

def generate_key(algorithm: Literal["RS384", "ES384", "RS256"] = "RS384") -> GeneratedKey: ...
def public_jwks(
    private_key: Union[str, Mapping[str, Any]],
    algorithm: Literal["RS384", "ES384", "RS256"] = "RS384",
) -> _JsonDict: ...

# ---------------------------------------------------------------------------------------------
# FHIR
# ---------------------------------------------------------------------------------------------

@final
class ResourceIterator(Iterator[_JsonDict], AsyncIterator[_JsonDict]):
    def __iter__(self) -> "ResourceIterator": ...
    def __next__(self) -> _JsonDict: ...
    def __aiter__(self) -> "ResourceIterator": ...
    def __anext__(self) -> Awaitable[_JsonDict]: ...

@final
class FhirClient:
    def __new__(
        cls,
        base_url: str,
        auth: Optional[TokenProvider] = None,
        fhir_version: Literal["R4", "STU3", "R3"] = "R4",
        default_params: _Params = None,
        *,
        http: Optional[HttpConfig] = None,
    ) -> Self: ...
    @property
    def base_url(self) -> str: ...
    @property
    def fhir_version(self) -> str: ...
    def read(self, resource_type: str, id: str) -> _JsonDict: ...
    def aread(self, resource_type: str, id: str) -> Awaitable[_JsonDict]: ...
    def search(self, resource_type: str, params: _Params = None) -> ResourceIterator: ...
    def asearch(self, resource_type: str, params: _Params = None) -> ResourceIterator: ...
    def search_all(self, resource_type: str, params: _Params = None) -> List[_JsonDict]: ...
    def asearch_all(self, resource_type: str, params: _Params = None) -> Awaitable[List[_JsonDict]]: ...
    def search_page(self, resource_type: str, params: _Params = None) -> _JsonDict: ...
    def asearch_page(self, resource_type: str, params: _Params = None) -> Awaitable[_JsonDict]: ...
    def next_page(self, bundle: Mapping[str, Any]) -> Optional[_JsonDict]: ...
    def anext_page(self, bundle: Mapping[str, Any]) -> Awaitable[Optional[_JsonDict]]: ...
    def create(self, resource: Mapping[str, Any]) -> _JsonDict: ...
    def acreate(self, resource: Mapping[str, Any]) -> Awaitable[_JsonDict]: ...
    def create_if_none_exist(self, resource: Mapping[str, Any], query: str) -> Tuple[_JsonDict, bool]: ...
    def acreate_if_none_exist(
        self, resource: Mapping[str, Any], query: str
    ) -> Awaitable[Tuple[_JsonDict, bool]]: ...
    def update(self, resource: Mapping[str, Any]) -> _JsonDict: ...
    def aupdate(self, resource: Mapping[str, Any]) -> Awaitable[_JsonDict]: ...
    def transaction(self, bundle: Mapping[str, Any]) -> _JsonDict: ...
    def atransaction(self, bundle: Mapping[str, Any]) -> Awaitable[_JsonDict]: ...
    def capabilities(self) -> _JsonDict: ...
    def acapabilities(self) -> Awaitable[_JsonDict]: ...

# ---------------------------------------------------------------------------------------------
# CIBMTR
# ---------------------------------------------------------------------------------------------

@final
class LabResult:
    def __new__(
        cls,
        loinc: str,
        value: Union[float, int, str],
        unit: str,
        effective: _When,
        *,
        reference_low: Optional[float] = None,
        reference_high: Optional[float] = None,
        comparator: Optional[Literal["<", "<=", ">=", ">"]] = None,
        status: Optional[Literal["registered", "preliminary", "final", "amended"]] = None,
        display: Optional[str] = None,
    ) -> Self: ...
    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> "LabResult": ...
    def to_dict(self) -> _JsonDict: ...
    def check(self, *, strict: bool = False, convert_units: bool = False) -> List[str]: ...
    @property
    def loinc(self) -> str: ...
    @property
    def value(self) -> float: ...
    @property
    def unit(self) -> str: ...
    @property
    def effective(self) -> str: ...
    @property
    def comparator(self) -> Optional[str]: ...
    @property
    def reference_low(self) -> Optional[float]: ...
    @property
    def reference_high(self) -> Optional[float]: ...
    @property
    def status(self) -> Optional[str]: ...
    @property
    def display(self) -> Optional[str]: ...

@final
class LabSubmission:
    @property
    def status(self) -> Literal["created", "already_present"]: ...
    @property
    def id(self) -> str: ...
    @property
    def submission_id(self) -> str: ...
    @property
    def warnings(self) -> List[str]: ...
    def to_dict(self) -> _JsonDict: ...

@final
class SubmissionReport:
    @property
    def total(self) -> int: ...
    @property
    def created(self) -> int: ...
    @property
    def already_present(self) -> int: ...
    @property
    def failed(self) -> int: ...
    @property
    def elapsed(self) -> float: ...
    @property
    def batch_id(self) -> Optional[str]: ...
    @property
    def items(self) -> List[_JsonDict]: ...
    def failures(self) -> List[_JsonDict]: ...
    def to_list(self) -> List[_JsonDict]: ...
    def to_dict(self) -> _JsonDict: ...
    def to_dataframe(self) -> Any: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[_JsonDict]: ...

_LabArg = Union[LabResult, Mapping[str, Any]]

@disjoint_base
class CibmtrClient:
    def __new__(
        cls,
        ccn: str,
        auth: TokenProvider,
        environment: Literal["test", "production", "prod"] = "test",
        base_url: Optional[str] = None,
        *,
        fhir_path: Optional[str] = None,
        uri_family: Literal["cibmtr", "terminology"] = "cibmtr",
        fhir_version: Literal["STU3", "R3", "R4"] = "STU3",
        strict: bool = False,
        convert_units: bool = False,
        http: Optional[HttpConfig] = None,
    ) -> Self: ...
    @property
    def ccn(self) -> str: ...
    @property
    def fhir(self) -> FhirClient: ...
    def register_crid(
        self,
        first_name: str,
        last_name: str,
        birth_date: Union[str, datetime.date],
        gender: str,
        *,
        ssn: Optional[str] = None,
        race: Union[Sequence[str], str, None] = None,
        ethnicity: Optional[str] = None,
        mothers_maiden_name: Optional[str] = None,
        nmdp_rid: Optional[int] = None,
        ebmt_cic: Optional[str] = None,
        ebmt_id: Optional[str] = None,
        cibmtr_team: Optional[int] = None,
        cibmtr_iubmid: Optional[str] = None,
    ) -> int: ...
    def aregister_crid(
        self,
        first_name: str,
        last_name: str,
        birth_date: Union[str, datetime.date],
        gender: str,
        *,
        ssn: Optional[str] = None,
        race: Union[Sequence[str], str, None] = None,
        ethnicity: Optional[str] = None,
        mothers_maiden_name: Optional[str] = None,
        nmdp_rid: Optional[int] = None,
        ebmt_cic: Optional[str] = None,
        ebmt_id: Optional[str] = None,
        cibmtr_team: Optional[int] = None,
        cibmtr_iubmid: Optional[str] = None,
    ) -> Awaitable[int]: ...
    def ensure_patient(self, crid: int) -> str: ...
    def aensure_patient(self, crid: int) -> Awaitable[str]: ...
    def submit_lab(
        self,
        crid: int,
        lab_or_loinc: Union[_LabArg, str],
        value: Union[float, int, str, None] = None,
        unit: Optional[str] = None,
        effective: Optional[_When] = None,
        reference_range: Optional[Tuple[Optional[float], Optional[float]]] = None,
        *,
        comparator: Optional[str] = None,
        status: Optional[str] = None,
        display: Optional[str] = None,
    ) -> LabSubmission: ...
    def asubmit_lab(
        self,
        crid: int,
        lab_or_loinc: Union[_LabArg, str],
        value: Union[float, int, str, None] = None,
        unit: Optional[str] = None,
        effective: Optional[_When] = None,
        reference_range: Optional[Tuple[Optional[float], Optional[float]]] = None,
        *,
        comparator: Optional[str] = None,
        status: Optional[str] = None,
        display: Optional[str] = None,
    ) -> Awaitable[LabSubmission]: ...
    def submit_labs(
        self,
        crid: int,
        labs: Iterable[_LabArg],
        *,
        concurrency: int = 8,
        progress: Optional[_ProgressCallback] = None,
        use_bundles: bool = False,
        bundle_size: int = 50,
        journal: Optional[_StrPath] = None,
        resume: Optional[str] = None,
    ) -> SubmissionReport: ...
    def asubmit_labs(
        self,
        crid: int,
        labs: Iterable[_LabArg],
        *,
        concurrency: int = 8,
        progress: Optional[_ProgressCallback] = None,
        use_bundles: bool = False,
        bundle_size: int = 50,
        journal: Optional[_StrPath] = None,
        resume: Optional[str] = None,
    ) -> Awaitable[SubmissionReport]: ...
    def submit_labs_csv(
        self,
        crid: int,
        path: _StrPath,
        *,
        concurrency: int = 8,
        progress: Optional[_ProgressCallback] = None,
        use_bundles: bool = False,
        bundle_size: int = 50,
        journal: Optional[_StrPath] = None,
        resume: Optional[str] = None,
    ) -> SubmissionReport: ...
    def asubmit_labs_csv(
        self,
        crid: int,
        path: _StrPath,
        *,
        concurrency: int = 8,
        progress: Optional[_ProgressCallback] = None,
        use_bundles: bool = False,
        bundle_size: int = 50,
        journal: Optional[_StrPath] = None,
        resume: Optional[str] = None,
    ) -> Awaitable[SubmissionReport]: ...
    def observations(self, crid: int) -> List[_JsonDict]: ...
    def aobservations(self, crid: int) -> Awaitable[List[_JsonDict]]: ...

def lab_catalog() -> List[_JsonDict]: ...
def lab_for_code(loinc: str) -> Optional[_JsonDict]: ...
def environment_urls(environment: Literal["test", "production", "prod"] = "test") -> Dict[str, str]: ...

# ---------------------------------------------------------------------------------------------
# Submission journal
# ---------------------------------------------------------------------------------------------

@final
class Journal:
    """The submission journal ``submit_labs(..., journal=path)`` writes, read with the SDK's own
    SQLite: safe in a process that also submits (Python's ``sqlite3`` is not)."""

    #: The columns of the CSV export, in order.
    CSV_COLUMNS: Tuple[str, ...]
    def __new__(cls, path: _StrPath) -> Self: ...
    @property
    def path(self) -> pathlib.Path: ...
    def batches(self) -> List[_JsonDict]: ...
    def batch(self, batch_id: str) -> _JsonDict: ...
    def items(self, batch_id: str) -> List[_JsonDict]: ...
    def export(
        self,
        batch_id: str,
        format: Literal["csv", "json"] = "csv",
        path: Optional[_StrPath] = None,
    ) -> str: ...
    def to_dataframe(self, batch_id: str) -> Any: ...

# ---------------------------------------------------------------------------------------------
# Sandbox
# ---------------------------------------------------------------------------------------------

_Route = Literal[
    "okta_token",
    "msk_token",
    "protected",
    "smart_token",
    "crid",
    "patient_create",
    "patient_search",
    "observation_create",
    "observation_search",
    "msk_fhir",
    "aidbox_fhir",
]

@disjoint_base
class Sandbox:
    def __new__(
        cls,
        *,
        port: int = 0,
        okta_token_ttl: Optional[float] = None,
        msk_token_ttl: Optional[float] = None,
        backend_token_ttl: Optional[float] = None,
        smart_token_ttl: Optional[float] = None,
        okta_rate_per_second: int = 4,
        okta_rate_per_minute: int = 600,
        deny_authorization: bool = False,
        rotate_refresh_tokens: bool = True,
        crid_response: Literal["perfect_match", "top_level"] = "perfect_match",
        patient_id_only_in_location: bool = False,
        accept_bundles: bool = True,
    ) -> Self: ...
    @property
    def urls(self) -> Dict[str, str]: ...
    @property
    def credentials(self) -> Dict[str, Dict[str, str]]: ...
    @property
    def running(self) -> bool: ...
    def token_requests(self, client_id: str) -> int: ...
    def token_requests_total(self) -> int: ...
    def tokens_issued(self) -> int: ...
    def requests(self, route: _Route) -> int: ...
    def set_fault(
        self,
        route: _Route,
        *,
        status: int = 0,
        headers: Optional[Mapping[str, str]] = None,
        body: str = "",
        delay: float = 0.0,
        times: int = 0,
        drop_connection: Optional[Literal["before", "after"]] = None,
        share: float = 0.0,
    ) -> None: ...
    def clear_faults(self) -> None: ...
    def revoke_all_tokens(self) -> None: ...
    def register_backend_client(self, client_id: str, jwks: Mapping[str, Any]) -> None: ...
    def crids_registered(self) -> int: ...
    def patients(self) -> List[_JsonDict]: ...
    def observations(self) -> List[_JsonDict]: ...
    def secrets_seen(self) -> List[str]: ...
    def stop(self) -> None: ...
    def __enter__(self) -> "Sandbox": ...
    def __exit__(self, *exc: object) -> Literal[False]: ...
