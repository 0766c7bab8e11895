"""Raw S3 requests signed with AWS Signature Version 4, for the calls pyarrow does not make.

The object-store tests send bucket-level calls (DeleteBucket, PutBucketPolicy) with a step's keys
to the real server; no AWS SDK is in the environment, and the signature is short enough to write.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import urllib.error
import urllib.parse
import urllib.request


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def request(endpoint: str, method: str, path: str, access_key: str, secret_key: str, *,
            region: str, query: str = "", body: bytes = b"") -> tuple[int, str]:
    """Send one signed request; return the HTTP status and the response body."""
    host = urllib.parse.urlsplit(endpoint).netloc
    now = dt.datetime.now(dt.UTC)
    stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    payload = hashlib.sha256(body).hexdigest()
    headers = {"host": host, "x-amz-content-sha256": payload, "x-amz-date": stamp}
    signed = ";".join(sorted(headers))
    canonical = "\n".join([method, urllib.parse.quote(path), query,
                           "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)), signed, payload])
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{secret_key}".encode(), day), region), "s3"), "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
                                f"SignedHeaders={signed}, Signature={signature}")
    url = f"{endpoint}{urllib.parse.quote(path)}" + (f"?{query}" if query else "")
    call = urllib.request.Request(url, data=body or None, method=method,  # noqa: S310 - loopback test server
                                  headers={k: v for k, v in headers.items() if k != "host"})
    try:
        with urllib.request.urlopen(call, timeout=30) as response:  # noqa: S310
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")
