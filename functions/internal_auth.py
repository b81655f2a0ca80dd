"""Who may call graylane's internal endpoints, and which events may claim a person as their actor.

Trust model (README "Trust model"):

    outside world ──► edges (public listener / Knative gateway)              internal endpoints
      registry          /hooks/{source}  vendor token / HMAC / Basic    ┐     POST /functions/{target}
      Alertmanager      /hooks/alertmanager  token / Basic              ├──►  POST /tick
      people            /chatops/{platform}  platform signature         │     (serve's internal listener,
      CI / CLI          /api/v1/...  API token -> user                  ┘      Knative function services)

1. **Edges authenticate the outside party** and build the event themselves. Only an edge sets a command's
   actor: chat (the platform's signature over the body names the user), the approval API (the token names
   the user). No actor field anyone sends is trusted: the approval API has no such field, and chat bodies
   are signed by the platform.
2. **Edges attest what they create.** An edge holding `GRAYLANE_EDGE_KEY` adds the CloudEvent extension
   `graylaneedge` = hex HMAC-SHA256(key, canonical(type, id, subject, graylanerelease, data)). Every
   consumer outside the edge's own process (serve's internal `/functions/{target}`, the Knative functions)
   accepts `image.pushed`, `release.command` and `alert.*` only with a valid attestation, so no in-cluster
   caller (the tick CronJob, another pod posting to the broker) can start a release, impersonate a chat
   user or fire an alert, even with the transport credential. Ticks are not attested: a tick only makes
   due work happen, which every sweep does anyway.
3. **Internal endpoints authenticate their caller** (transport): `Authorization: Bearer
   <GRAYLANE_INTERNAL_TOKEN>`, or `X-Graylane-Signature: sha256=<hex HMAC-SHA256(GRAYLANE_INTERNAL_TOKEN,
   "<X-Graylane-Timestamp>\\n" + each ce-*/content-type header as "name:value\\n" in name order + "\\n" +
   body)>` with `X-Graylane-Timestamp` (Unix seconds) within 5 minutes, or, on Knative with Eventing's
   `authentication-oidc` feature, the broker's OIDC token: a JWT for audience `GRAYLANE_OIDC_AUDIENCE`
   whose `sub` is one of `GRAYLANE_OIDC_SUBJECTS` (the Trigger's or PingSource's OIDC service account),
   signed by a key of the cluster's service-account issuer. Nothing configured: every call is refused.
   All comparisons are constant-time.

Inside one `graylane serve` process the edges publish on the in-process bus straight to the runner: the
process is its own trusted edge, so those events need no attestation.

Imports are the standard library only; `cryptography` is imported when the first JWT is verified.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from functions.core import events as ev
from functions.core.values import value
from functions.errors import ConfigError, GraylaneError, brief

log = logging.getLogger("graylane.internal_auth")

TOKEN_ENV = "GRAYLANE_INTERNAL_TOKEN"
EDGE_KEY_ENV = "GRAYLANE_EDGE_KEY"
ATTESTATION = "graylaneedge"  # CloudEvent extension carrying the edge's HMAC
RELEASE_EXTENSION = "graylanerelease"
SIGNATURE_HEADER = "x-graylane-signature"
TIMESTAMP_HEADER = "x-graylane-timestamp"
SIGNATURE_WINDOW = 300.0  # seconds
MIN_SECRET = 16  # characters of a token or key
ATTESTED_TYPES = (ev.IMAGE_PUSHED, ev.RELEASE_COMMAND, ev.ALERT_FIRING, ev.ALERT_RESOLVED)
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
JWT_LEEWAY = 60.0  # seconds of clock skew allowed on exp / nbf / iat


class Unauthenticated(GraylaneError):
    """No credential, or a wrong one: HTTP 401."""


class Forbidden(GraylaneError):
    """A genuine caller sent an event it may not: HTTP 403."""


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8", "surrogateescape"), b.encode("utf-8", "surrogateescape"))


def _secret(env: Mapping[str, str], name: str) -> str:
    raw = env.get(name, "").strip()
    if raw and len(raw) < MIN_SECRET:
        raise ConfigError(
            f"{name} must be at least {MIN_SECRET} characters (use e.g. `openssl rand -hex 32`)"
        )
    return raw


# ---------------------------------------------------------------------------------------------- OIDC (Knative)


@value
class OidcConfig:
    """Knative Eventing's sender identity: the broker (or a PingSource) sends a JWT for our audience."""

    audience: str
    subjects: tuple[
        str, ...
    ]  # accepted `sub` claims, e.g. system:serviceaccount:ns:<trigger>oidc-...-trigger
    issuer: str = ""  # expected `iss`; empty: the issuer the API server's discovery document names
    jwks_url: str = ""  # empty: the API server's /openid/v1/jwks (with the pod's token); file:// allowed
    ca_file: str = f"{SA_DIR}/ca.crt"
    token_file: str = f"{SA_DIR}/token"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> OidcConfig | None:
        audience = env.get("GRAYLANE_OIDC_AUDIENCE", "").strip()
        subjects = tuple(s.strip() for s in env.get("GRAYLANE_OIDC_SUBJECTS", "").split(",") if s.strip())
        if not audience:
            if subjects:
                raise ConfigError("GRAYLANE_OIDC_SUBJECTS is set but GRAYLANE_OIDC_AUDIENCE is not")
            return None
        if not subjects:
            # any service account can get a token for any audience: the subject is what names the broker
            raise ConfigError(
                "GRAYLANE_OIDC_AUDIENCE needs GRAYLANE_OIDC_SUBJECTS: the OIDC service accounts "
                "allowed to call (kubectl get trigger NAME -o jsonpath={.status.auth.serviceAccountName})"
            )
        return cls(
            audience=audience,
            subjects=subjects,
            issuer=env.get("GRAYLANE_OIDC_ISSUER", "").strip(),
            jwks_url=env.get("GRAYLANE_OIDC_JWKS_URL", "").strip(),
            ca_file=env.get("GRAYLANE_OIDC_CA_FILE", f"{SA_DIR}/ca.crt"),
            token_file=env.get("GRAYLANE_OIDC_TOKEN_FILE", f"{SA_DIR}/token"),
        )


def _b64url(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise Unauthenticated("the bearer token is not a JWT (bad base64url)") from None


def _json_part(text: str, what: str) -> dict[str, Any]:
    try:
        data = json.loads(_b64url(text))
    except ValueError:
        raise Unauthenticated(f"the bearer token's {what} is not JSON") from None
    if not isinstance(data, dict):
        raise Unauthenticated(f"the bearer token's {what} is not a JSON object")
    return data


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("eyJ")


class Jwks:
    """The issuer's signing keys, fetched when first needed and again (at most every 30 s) for an unknown kid."""

    def __init__(self, config: OidcConfig, fetch: Callable[[str], dict[str, Any]] | None = None) -> None:
        self.config = config
        self._fetch = fetch or self._get
        self._lock = threading.Lock()
        self._keys: dict[str, dict[str, Any]] = {}
        self._fetched = 0.0
        self._issuer = config.issuer

    def issuer(self) -> str:
        if not self._issuer:
            doc = self._fetch(_apiserver() + "/.well-known/openid-configuration")
            self._issuer = str(doc.get("issuer", ""))
            if not self._issuer:
                raise Unauthenticated("the API server's OIDC discovery document names no issuer")
        return self._issuer

    def key(self, kid: str) -> dict[str, Any]:
        with self._lock:
            if kid not in self._keys and time.monotonic() - self._fetched > 30.0:
                url = self.config.jwks_url or _apiserver() + "/openid/v1/jwks"
                doc = self._fetch(url)
                keys = doc.get("keys")
                if not isinstance(keys, list):
                    raise Unauthenticated(f"the JWKS at {url} has no keys")
                self._keys = {str(k.get("kid", "")): k for k in keys if isinstance(k, dict)}
                self._fetched = time.monotonic()
            found = self._keys.get(kid) or (self._keys.get("") if len(self._keys) == 1 else None)
        if found is None:
            raise Unauthenticated(f"the bearer token is signed by an unknown key {kid[:64]!r}")
        return found

    def _get(self, url: str) -> dict[str, Any]:
        import ssl
        import urllib.request

        if url.startswith("file://"):
            with open(url.removeprefix("file://"), encoding="utf-8") as f:
                return dict(json.load(f))
        headers = {"Accept": "application/json"}
        context = None
        if url.startswith(_apiserver()):
            context = ssl.create_default_context(
                cafile=self.config.ca_file if os.path.exists(self.config.ca_file) else None
            )
            try:
                with open(self.config.token_file, encoding="utf-8") as f:
                    headers["Authorization"] = "Bearer " + f.read().strip()
            except OSError:
                pass
        try:
            with urllib.request.urlopen(
                urllib.request.Request(url, headers=headers), timeout=5, context=context
            ) as response:
                return dict(json.loads(response.read(1 << 20)))
        except (OSError, ValueError) as err:
            raise Unauthenticated(f"the issuer's keys could not be read from {url}: {err}") from err


def _apiserver() -> str:
    host = os.environ.get("KUBERNETES_SERVICE_HOST", "kubernetes.default.svc")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    host = f"[{host}]" if ":" in host else host
    return f"https://{host}:{port}"


def verify_jwt(token: str, config: OidcConfig, jwks: Jwks, now: float) -> dict[str, Any]:
    """The claims of a JWT signed (RS256 or ES256) by the issuer for `config.audience` and an allowed subject."""
    head, payload, signature = token.split(".")
    header = _json_part(head, "header")
    claims = _json_part(payload, "claims")
    alg = header.get("alg")
    if alg not in ("RS256", "ES256"):
        raise Unauthenticated(f"the bearer token's algorithm {str(alg)[:20]!r} is not RS256 or ES256")
    _check_signature(
        alg, jwks.key(str(header.get("kid", ""))), f"{head}.{payload}".encode(), _b64url(signature)
    )
    if not _same(str(claims.get("iss", "")), jwks.issuer()):
        raise Unauthenticated(
            f"the bearer token's issuer {str(claims.get('iss'))[:100]!r} is not the cluster's"
        )
    audiences = claims.get("aud")
    audiences = (
        [audiences] if isinstance(audiences, str) else audiences if isinstance(audiences, list) else []
    )
    if config.audience not in audiences:
        raise Unauthenticated(f"the bearer token is not for audience {config.audience}")
    exp, nbf = claims.get("exp"), claims.get("nbf", claims.get("iat", 0))
    if not isinstance(exp, int | float) or exp + JWT_LEEWAY < now:
        raise Unauthenticated("the bearer token has expired")
    if isinstance(nbf, int | float) and nbf - JWT_LEEWAY > now:
        raise Unauthenticated("the bearer token is not valid yet")
    subject = str(claims.get("sub", ""))
    if not any(_same(subject, allowed) for allowed in config.subjects):
        raise Unauthenticated(
            f"the bearer token's subject {subject[:200]!r} may not call this function; allowed: "
            + ", ".join(config.subjects)
        )
    return claims


def _check_signature(alg: str, jwk: dict[str, Any], signed: bytes, signature: bytes) -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    def number(name: str) -> int:
        return int.from_bytes(_b64url(str(jwk.get(name, ""))), "big")

    try:
        if alg == "RS256":
            if jwk.get("kty") != "RSA":
                raise Unauthenticated("the signing key is not an RSA key")
            rsa.RSAPublicNumbers(number("e"), number("n")).public_key().verify(
                signature, signed, padding.PKCS1v15(), hashes.SHA256()
            )
        else:
            if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256" or len(signature) != 64:
                raise Unauthenticated("the signing key is not a P-256 key")
            key = ec.EllipticCurvePublicNumbers(number("x"), number("y"), ec.SECP256R1()).public_key()
            der = encode_dss_signature(
                int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
            )
            key.verify(der, signed, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise Unauthenticated("the bearer token's signature does not verify") from None
    except ValueError as err:
        raise Unauthenticated(f"the signing key cannot verify: {err}") from None


# ---------------------------------------------------------------------------------------------- transport


def request_signature(token: str, headers: Mapping[str, str], body: bytes, timestamp: str) -> str:
    """`sha256=<hex>` over the timestamp, the CloudEvent headers (binary mode) and the body."""
    lower = {k.lower(): v for k, v in headers.items()}
    signed = [
        f"{k}:{lower[k].strip()}\n" for k in sorted(lower) if k.startswith("ce-") or k == "content-type"
    ]
    message = f"{timestamp}\n{''.join(signed)}\n".encode() + body
    return "sha256=" + hmac.new(token.encode(), message, hashlib.sha256).hexdigest()


def signed_headers(
    token: str, headers: Mapping[str, str], body: bytes, now: float | None = None
) -> dict[str, str]:
    """The headers an in-cluster sender adds to sign its request with the internal token instead of sending it."""
    stamp = str(int(time.time() if now is None else now))
    return {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: request_signature(token, headers, body, stamp)}


@value
class InternalAuth:
    token: str = ""  # GRAYLANE_INTERNAL_TOKEN
    edge_key: str = ""  # GRAYLANE_EDGE_KEY
    oidc: OidcConfig | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> InternalAuth:
        env = os.environ if env is None else env
        return cls(
            token=_secret(env, TOKEN_ENV), edge_key=_secret(env, EDGE_KEY_ENV), oidc=OidcConfig.from_env(env)
        )

    @property
    def configured(self) -> bool:
        return bool(self.token or self.oidc)

    def authenticate(
        self, headers: Mapping[str, str], body: bytes, now: float | None = None, jwks: Jwks | None = None
    ) -> str:
        """Who called (for logs): 'internal token', 'signed request' or 'oidc:<sub>'; Unauthenticated otherwise."""
        now = time.time() if now is None else now
        if not self.configured:
            raise Unauthenticated(
                f"internal endpoints have no credential configured ({TOKEN_ENV}, or "
                "GRAYLANE_OIDC_AUDIENCE and GRAYLANE_OIDC_SUBJECTS for Knative's OIDC delivery); "
                "they refuse every call"
            )
        lower = {k.lower(): v for k, v in headers.items()}
        scheme, _, presented = lower.get("authorization", "").strip().partition(" ")
        presented = presented.strip()
        if scheme.lower() == "bearer" and presented:
            if self.oidc is not None and looks_like_jwt(presented):
                claims = verify_jwt(presented, self.oidc, jwks or _jwks_for(self.oidc), now)
                return f"oidc:{claims.get('sub')}"
            if self.token and _same(presented, self.token):
                return "internal token"
            raise Unauthenticated("the bearer token is not valid for internal endpoints")
        signature = lower.get(SIGNATURE_HEADER, "").strip().lower()
        if signature and self.token:
            stamp = lower.get(TIMESTAMP_HEADER, "").strip()
            if not stamp.isdigit() or abs(now - int(stamp)) > SIGNATURE_WINDOW:
                raise Unauthenticated(
                    f"{TIMESTAMP_HEADER} must be Unix seconds within {int(SIGNATURE_WINDOW)} s "
                    "of now (a replay, or the clocks differ)"
                )
            if not _same(signature, request_signature(self.token, lower, body, stamp)):
                raise Unauthenticated(f"{SIGNATURE_HEADER} does not match the request")
            return "signed request"
        raise Unauthenticated(
            "internal endpoints need Authorization: Bearer <GRAYLANE_INTERNAL_TOKEN> (or the "
            f"broker's OIDC token), or {SIGNATURE_HEADER} with {TIMESTAMP_HEADER}"
        )


_jwks_cache: dict[OidcConfig, Jwks] = {}


def _jwks_for(config: OidcConfig) -> Jwks:
    if config not in _jwks_cache:
        _jwks_cache[config] = Jwks(config)
    return _jwks_cache[config]


# ---------------------------------------------------------------------------------------------- origin


def _attributes(event: Any) -> tuple[Mapping[str, Any], Any]:
    get_attributes = getattr(event, "get_attributes", None)
    if callable(get_attributes):
        return get_attributes(), getattr(event, "data", None)
    return event, event.get("data")


def _canonical(event: Any) -> bytes:
    attrs, data = _attributes(event)
    if isinstance(data, bytes | bytearray | str):
        try:
            data = (
                json.loads(data)
                if str(data if isinstance(data, str) else data.decode("utf-8", "replace")).strip()
                else None
            )
        except ValueError:
            pass  # not JSON: signed as it is (bytes as text)
    if isinstance(data, bytes | bytearray):
        data = data.decode("utf-8", "replace")
    parts = [
        attrs.get("type", ""),
        attrs.get("id", ""),
        attrs.get("subject", "") or "",
        attrs.get(RELEASE_EXTENSION, "") or "",
        data,
    ]
    return json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str).encode()


def attestation(event: Any, key: str) -> str:
    return hmac.new(key.encode(), _canonical(event), hashlib.sha256).hexdigest()


def attest(event: Any, key: str) -> Any:
    """Mark `event` as made by this edge (the CloudEvent extension `graylaneedge`); returns the same event."""
    event[ATTESTATION] = attestation(event, key)
    return event


def verify_origin(event: Any, key: str) -> None:
    """Forbidden unless an edge holding `key` made this event (required for image, command and alert events)."""
    attrs, _ = _attributes(event)
    event_type = str(attrs.get("type", ""))
    if event_type not in ATTESTED_TYPES:
        return
    if not key:
        raise Forbidden(
            f"{event_type} events are accepted only from graylane's edges, and no {EDGE_KEY_ENV} is "
            "configured to check that"
        )
    given = str(attrs.get(ATTESTATION, "") or "")
    if not given:
        raise Forbidden(
            f"{event_type} event {brief(str(attrs.get('id', '')), 80)!r} carries no edge attestation "
            f"({ATTESTATION}): only graylane's gateway, approval API and chat endpoints may create it, "
            "with the actor they authenticated"
        )
    if not _same(given.lower(), attestation(event, key)):
        raise Forbidden(
            f"{event_type} event {brief(str(attrs.get('id', '')), 80)!r}: the edge attestation does not "
            "match its content (a changed actor, app or field)"
        )


# ---------------------------------------------------------------------------------------------- functions-framework


def functions_framework_guard() -> InternalAuth:
    """Call at import in a functions-framework source module (release_start.py, ...): the caller of the function
    is authenticated (InternalAuth from the environment) before functions-framework reads the body, and a body
    that is no CloudEvent is answered without echoing it. Returns the settings, for `origin_or_403`.

    functions-framework executes the source module inside its new Flask app's context, so the hooks go on that
    app; imported anywhere else (a tool, a test) there is no app and nothing is registered."""
    import flask

    auth = InternalAuth.from_env()
    try:
        app = flask.current_app._get_current_object()  # type: ignore[attr-defined]
    except RuntimeError:
        return auth

    def authenticate() -> Any:
        try:
            caller = auth.authenticate(dict(flask.request.headers), flask.request.get_data(cache=True))
        except Unauthenticated as err:
            log.warning("function call refused: %s", brief(str(err), 300))
            return (
                flask.jsonify({"error": brief(str(err))}),
                401,
                {"WWW-Authenticate": 'Bearer realm="graylane"'},
            )
        log.debug("function called by %s", caller)
        return None

    def not_a_cloudevent(err: Exception) -> Any:
        return flask.jsonify({"error": "the body is not a CloudEvent (binary or structured mode)"}), 400

    app.before_request(authenticate)
    app.register_error_handler(400, not_a_cloudevent)
    return auth


def origin_or_403(auth: InternalAuth, event: Any) -> None:
    """verify_origin, answering 403 (nothing handled) from inside a functions-framework function."""
    try:
        verify_origin(event, auth.edge_key)
    except Forbidden as err:
        import flask

        log.warning("function refused event %s: %s", brief(str(event["id"]), 80), err)
        flask.abort(flask.make_response(flask.jsonify({"error": brief(str(err))}), 403))


class AttestingBus:
    """A bus for an edge: every event it publishes is attested with the edge key first."""

    def __init__(self, bus: Any, key: str) -> None:
        self.bus = bus
        self.key = key

    def publish(self, event: Any) -> None:
        if self.key:
            attest(event, self.key)
        self.bus.publish(event)

    def __getattr__(self, name: str) -> Any:  # events, of_type, subscribe ... of the wrapped bus
        return getattr(self.bus, name)
