"""NCP API Gateway signature v2, as a requests auth class.

String to sign: ``METHOD + " " + URI + "\\n" + TIMESTAMP + "\\n" + ACCESS_KEY`` where URI is the
path and query exactly as sent on the wire; signature = base64(HMAC-SHA256(secret, that)).
The pure pieces (:func:`string_to_sign`, :func:`sign`) are separate so they can be checked
against the published vectors without any HTTP.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
from collections.abc import Callable

from requests.auth import AuthBase
from requests.models import PreparedRequest

TIMESTAMP_HEADER = "x-ncp-apigw-timestamp"
ACCESS_KEY_HEADER = "x-ncp-iam-access-key"
SIGNATURE_HEADER = "x-ncp-apigw-signature-v2"
API_KEY_HEADER = "x-ncp-apigw-api-key"


def string_to_sign(method: str, uri: str, timestamp: str, access_key: str) -> str:
    """The text signature v2 signs; ``uri`` is path plus ``?query`` as sent."""
    return f"{method.upper()} {uri}\n{timestamp}\n{access_key}"


def sign(secret_key: str, message: str) -> str:
    """base64(HMAC-SHA256(secret_key, message)), UTF-8 throughout."""
    digest = hmac.new(secret_key.encode("utf-8"), message.encode("utf-8"), hashlib.sha256)
    return base64.b64encode(digest.digest()).decode("ascii")


class MonotonicMillis:
    """Epoch milliseconds that never repeat within a process.

    Two attempts signed in the same millisecond would carry identical signatures, which a
    gateway may treat as a replay; bumping by one millisecond is far inside its 5-minute window.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._last = 0
        self._lock = threading.Lock()

    def __call__(self) -> int:
        now = int(self._clock() * 1000)
        with self._lock:
            self._last = max(now, self._last + 1)
            return self._last


class NcpSignatureV2(AuthBase):
    """Signs each prepared request with a fresh timestamp.

    requests calls it whenever a request is prepared with it as ``auth`` (the client prepares
    one per attempt itself, in ``NsmlClient.send_once``, rather than through
    ``Session.request``), so every attempt gets a new timestamp and signature.
    """

    def __init__(
        self,
        access_key: str,
        secret_key: str,
        api_key: str | None = None,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self.access_key = access_key
        self._secret_key = secret_key
        self._api_key = api_key
        self._clock_ms = clock_ms or MonotonicMillis()

    def __repr__(self) -> str:  # never show the secret, e.g. in a traceback's locals
        return f"NcpSignatureV2(access_key={self.access_key!r}, secret_key='***')"

    def __call__(self, request: PreparedRequest) -> PreparedRequest:
        # A retry may hand us a request signed before: drop the old headers first.
        for header in (TIMESTAMP_HEADER, SIGNATURE_HEADER):
            request.headers.pop(header, None)
        timestamp = str(self._clock_ms())
        uri = request.path_url  # path and query exactly as requests will send them
        message = string_to_sign(request.method or "GET", uri, timestamp, self.access_key)
        request.headers[TIMESTAMP_HEADER] = timestamp
        request.headers[ACCESS_KEY_HEADER] = self.access_key
        request.headers[SIGNATURE_HEADER] = sign(self._secret_key, message)
        if self._api_key:
            request.headers[API_KEY_HEADER] = self._api_key
        return request
