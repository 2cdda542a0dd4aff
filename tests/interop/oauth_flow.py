#!/usr/bin/env python3
"""Drives the ap2-mandate OAuth flow with independent client libraries.

A running `ap2-mandate serve` is the authorization server under test. Which library does what:

- authlib: reads and validates the RFC 8414 metadata, builds the authorization URL with PKCE
  (S256), parses the authorization response (state), signs every private_key_jwt client
  assertion (RFC 7523, `aud` = the issuer), and sends the token (authorization code and RFC 8693
  token exchange), introspection and revocation requests.
- joserfc: generates the client's DPoP key, signs the DPoP proofs (RFC 9449: authlib has no
  DPoP support) and the actor token of the exchange, computes RFC 7638 thumbprints, and
  verifies our access tokens against our published JWKS.
- requests: plays the user's browser (cookies, sign-in and consent forms) and calls the
  protected resource `GET /v1/whoami`.

Environment: AP2_BASE (the issuer), AP2_CLIENT_ID and AP2_CLIENT_JWK (the top agent and its
private JWK with `kid`), AP2_SUB_CLIENT_ID and AP2_SUB_CLIENT_JWK (the sub-agent), AP2_USERNAME,
AP2_PASSWORD, and optionally AP2_USER_ID (the user's id, to compare with `sub`).

Prints one line per step. A check the flow depends on stops the run at once; a conformance
detail the flow can go on without (a metadata member, a status code) is printed as "not ok" and
the run goes on. Either way the run ends with FAIL lines on standard error and exit status 1.
"""

import base64
import hashlib
import html.parser
import json
import os
import secrets
import sys
import time
import urllib.parse

# The server under test listens on loopback over plain HTTP; authlib insists on HTTPS unless
# told otherwise. Set before authlib is imported.
os.environ.setdefault("AUTHLIB_INSECURE_TRANSPORT", "1")

import requests  # noqa: E402
from authlib.integrations.requests_client import OAuth2Session, OAuthError  # noqa: E402
from authlib.oauth2.rfc7523 import PrivateKeyJWT  # noqa: E402
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata  # noqa: E402
from joserfc import jwt  # noqa: E402
from joserfc.jwk import ECKey, KeySet  # noqa: E402
from joserfc.jwt import JWTClaimsRegistry  # noqa: E402

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
FULL_SCOPE = "mandates:request payments:present"
NARROW_SCOPE = "payments:present"
REDIRECT_URI = "http://127.0.0.1:9/callback"
TIMEOUT = 15


class Failure(Exception):
    """A check that did not hold."""


def check(condition, message):
    if not condition:
        raise Failure(message)


DEVIATIONS = []


def conform(condition, message):
    """A conformance check that does not stop the flow: collected and reported at the end."""
    if not condition:
        DEVIATIONS.append(message)
        print(f"not ok - {message}", flush=True)
    return condition


def step(message):
    print(f"ok - {message}", flush=True)


def env(name):
    value = os.environ.get(name)
    if not value:
        raise Failure(f"environment variable {name} is not set")
    return value


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def now():
    return int(time.time())


# ---- JOSE pieces authlib does not provide -------------------------------------------------


def dpop_proof(key, method, url, nonce=None, access_token=None):
    """An RFC 9449 proof: typ dpop+jwt, ES256, the public key in the header."""
    claims = {"jti": secrets.token_urlsafe(24), "htm": method, "htu": url, "iat": now()}
    if nonce is not None:
        claims["nonce"] = nonce
    if access_token is not None:
        claims["ath"] = b64url(hashlib.sha256(access_token.encode("ascii")).digest())
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.as_dict(private=False)}
    return jwt.encode(header, claims, key, algorithms=["ES256"])


def actor_token(key, agent_id, issuer):
    """The sub-agent's self-signed JWT naming it as the new actor of an exchange."""
    issued = now()
    claims = {
        "iss": agent_id,
        "sub": agent_id,
        "aud": issuer,
        "jti": secrets.token_urlsafe(24),
        "iat": issued,
        "exp": issued + 120,
    }
    return jwt.encode({"alg": "ES256", "kid": key.kid}, claims, key, algorithms=["ES256"])


class ShortLivedPrivateKeyJWT(PrivateKeyJWT):
    """authlib's private_key_jwt, with a lifetime this server accepts.

    authlib signs assertions valid for an hour; the server takes at most five minutes. Fresh
    claims on every call also give every assertion its own `jti` (authlib adds one when the
    claims lack it).
    """

    def sign(self, auth, token_endpoint):
        issued = now()
        self.claims = {"iat": issued, "exp": issued + 120}
        return super().sign(auth, token_endpoint)


# ---- the browser --------------------------------------------------------------------------


class FormReader(html.parser.HTMLParser):
    """Collects the action and the named inputs of the first form of a page."""

    def __init__(self):
        super().__init__()
        self.action = None
        self.fields = {}
        self._in_form = False
        self._seen_form = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form" and not self._seen_form:
            self._in_form = True
            self._seen_form = True
            self.action = attrs.get("action")
        elif tag == "input" and self._in_form and attrs.get("name"):
            self.fields[attrs["name"]] = attrs.get("value") or ""

    def handle_endtag(self, tag):
        if tag == "form":
            self._in_form = False


def read_form(page):
    reader = FormReader()
    reader.feed(page)
    check(reader.action is not None, "the page has no form")
    return reader.action, reader.fields


# ---- the flow -----------------------------------------------------------------------------


class Agent:
    """One registered agent: its authlib session, its DPoP key and the last DPoP nonce seen."""

    def __init__(self, agent_id, private_jwk, metadata, issuer, dpop_key):
        self.id = agent_id
        self.key = private_jwk
        self.dpop_key = dpop_key
        self.metadata = metadata
        self.nonce = None
        self.last_response = None
        auth = ShortLivedPrivateKeyJWT(
            token_endpoint=issuer, headers={"kid": private_jwk.kid}, alg="ES256"
        )
        self.session = OAuth2Session(
            agent_id,
            private_jwk,
            token_endpoint_auth_method=auth,
            revocation_endpoint_auth_method=auth,
            scope=FULL_SCOPE,
            redirect_uri=REDIRECT_URI,
            code_challenge_method="S256",
            token_endpoint=metadata["token_endpoint"],
            default_timeout=TIMEOUT,
        )
        self.session.hooks["response"].append(self._remember)

    def _remember(self, response, *args, **kwargs):
        self.last_response = response
        nonce = response.headers.get("DPoP-Nonce")
        if nonce:
            self.nonce = nonce
        return response

    def token(self, make_params):
        """A token request through authlib with a DPoP proof, retried once with a fresh nonce.

        Returns the token and whether the server asked for a nonce first.
        """
        url = self.metadata["token_endpoint"]
        asked_for_nonce = False
        for attempt in range(2):
            proof = dpop_proof(self.dpop_key, "POST", url, nonce=self.nonce)
            headers = {
                "Accept": "application/json",
                "Content-Type": "application/x-www-form-urlencoded",
                "DPoP": proof,
            }
            try:
                return self.session.fetch_token(url, headers=headers, **make_params()), asked_for_nonce
            except OAuthError as error:
                if error.error == "use_dpop_nonce" and attempt == 0:
                    check(self.last_response.status_code == 400, "use_dpop_nonce must be a 400")
                    check(self.nonce is not None, "use_dpop_nonce came without a DPoP-Nonce header")
                    asked_for_nonce = True
                    continue
                raise


def whoami(metadata_issuer, access_token, key, scheme="DPoP", proof=None):
    url = f"{metadata_issuer}/v1/whoami"
    headers = {"Authorization": f"{scheme} {access_token}"}
    if key is not None:
        headers["DPoP"] = proof or dpop_proof(key, "GET", url, access_token=access_token)
    return requests.get(url, headers=headers, timeout=TIMEOUT)


def verify_access_token(token, keys, issuer):
    """Verifies with joserfc against our JWKS and checks the registered claims."""
    decoded = jwt.decode(token, keys, algorithms=["ES256"])
    check(decoded.header.get("typ") == "at+jwt", f"typ is {decoded.header.get('typ')!r}, not at+jwt")
    check(decoded.header.get("alg") == "ES256", f"alg is {decoded.header.get('alg')!r}")
    registry = JWTClaimsRegistry(
        leeway=5,
        iss={"essential": True, "value": issuer},
        sub={"essential": True},
        aud={"essential": True},
        exp={"essential": True},
        iat={"essential": True},
        jti={"essential": True},
        client_id={"essential": True},
        scope={"essential": True},
        cnf={"essential": True},
    )
    registry.validate(decoded.claims)
    return decoded.claims


def expect_json(response, status, what):
    check(
        response.status_code == status,
        f"{what}: HTTP {response.status_code}, expected {status}: {response.text[:300]}",
    )
    return response.json()


def main():
    issuer = env("AP2_BASE").rstrip("/")
    top_id = env("AP2_CLIENT_ID")
    sub_id = env("AP2_SUB_CLIENT_ID")
    top_key = ECKey.import_key(json.loads(env("AP2_CLIENT_JWK")))
    sub_key = ECKey.import_key(json.loads(env("AP2_SUB_CLIENT_JWK")))
    username = env("AP2_USERNAME")
    password = env("AP2_PASSWORD")
    user_id = os.environ.get("AP2_USER_ID")
    check(top_key.kid and sub_key.kid, "the agents' private JWKs must carry a kid")

    # 1. Discovery.
    raw = requests.get(f"{issuer}/.well-known/oauth-authorization-server", timeout=TIMEOUT)
    metadata = AuthorizationServerMetadata(expect_json(raw, 200, "metadata"))
    # authlib's validators, one member at a time, so that every missing member is named.
    valid = True
    for member in AuthorizationServerMetadata.REGISTRY_KEYS:
        try:
            getattr(metadata, f"validate_{member}")()
        except ValueError as error:
            valid = conform(False, f"RFC 8414 metadata, {member}: {error}") and valid
    check(metadata["issuer"] == issuer, f"metadata issuer {metadata['issuer']!r} != {issuer!r}")
    check("S256" in metadata.get("code_challenge_methods_supported", []), "S256 not advertised")
    check(
        "private_key_jwt" in metadata.get("token_endpoint_auth_methods_supported", []),
        "private_key_jwt not advertised",
    )
    if valid:
        step("authlib validated the RFC 8414 metadata")

    keys = KeySet.import_key_set(expect_json(requests.get(metadata["jwks_uri"], timeout=TIMEOUT), 200, "JWKS"))
    step(f"fetched our JWKS ({len(keys.keys)} key(s))")

    # 2. Authorization request (authlib: URL, state and PKCE), bound to a fresh DPoP key.
    dpop_key = ECKey.generate_key("P-256")
    top = Agent(top_id, top_key, metadata, issuer, dpop_key)
    code_verifier = secrets.token_urlsafe(48)
    auth_url, state = top.session.create_authorization_url(
        metadata["authorization_endpoint"],
        code_verifier=code_verifier,
        dpop_jkt=dpop_key.thumbprint(),
    )
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(auth_url).query))
    check(query.get("code_challenge_method") == "S256", "authlib did not add an S256 challenge")
    step("authlib built the authorization URL with PKCE S256")

    # 3. The user signs in and approves, as a browser would.
    browser = requests.Session()
    page = browser.get(auth_url, timeout=TIMEOUT)
    check(page.status_code == 200, f"authorization page: HTTP {page.status_code}: {page.text[:300]}")
    action, fields = read_form(page.text)
    check(fields.get("action") == "signin", "the first page is not the sign-in form")
    check(fields.get("csrf") == browser.cookies.get("ap2_csrf"), "sign-in csrf field != ap2_csrf cookie")
    fields.update(username=username, password=password)
    consent = browser.post(urllib.parse.urljoin(issuer, action), data=fields, timeout=TIMEOUT, allow_redirects=False)
    check(consent.status_code == 200, f"sign-in: HTTP {consent.status_code}: {consent.text[:300]}")
    check(browser.cookies.get("ap2_session"), "sign-in set no ap2_session cookie")
    check(top_id in consent.text, "the consent page does not name the agent")
    step("signed in through the HTML form")

    action, fields = read_form(consent.text)
    fields["action"] = "approve"
    approved = browser.post(urllib.parse.urljoin(issuer, action), data=fields, timeout=TIMEOUT, allow_redirects=False)
    check(approved.status_code == 303, f"approve: HTTP {approved.status_code}: {approved.text[:300]}")
    location = approved.headers["Location"]
    check(location.startswith(REDIRECT_URI + "?"), f"redirected to {location!r}")
    returned = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
    check(returned.get("iss") == issuer, f"RFC 9207 iss is {returned.get('iss')!r}")
    check(returned.get("state") == state, "state did not come back")
    step("approved; redirected with code, state and iss")

    # 4. Code redemption: authlib parses the response (state check) and sends private_key_jwt;
    #    joserfc signs the DPoP proof; the server demands a nonce first.
    token, asked = top.token(
        lambda: {"authorization_response": location, "state": state, "code_verifier": code_verifier}
    )
    check(asked, "the token endpoint did not ask for a DPoP nonce")
    check(token.get("token_type") == "DPoP", f"token_type is {token.get('token_type')!r}")
    check(set(token.get("scope", "").split()) == set(FULL_SCOPE.split()), f"scope {token.get('scope')!r}")
    first = token["access_token"]
    step("authlib redeemed the code (private_key_jwt + DPoP, after use_dpop_nonce)")

    # 5. The access token verifies with joserfc against our JWKS.
    claims = verify_access_token(first, keys, issuer)
    check(claims["client_id"] == top_id, f"client_id {claims['client_id']!r}")
    check(claims.get("act") == {"sub": top_id}, f"act {claims.get('act')!r}")
    check(claims["cnf"].get("jkt") == dpop_key.thumbprint(), "cnf.jkt is not the DPoP key's thumbprint")
    audience = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    check(issuer in audience, f"aud {claims['aud']!r}")
    if user_id:
        check(claims["sub"] == user_id, f"sub {claims['sub']!r} != {user_id!r}")
    step("joserfc verified the access token (at+jwt, ES256, iss, sub, client_id, act, cnf.jkt)")

    # 6. The protected resource: DPoP works, Bearer and a replayed proof do not.
    who = expect_json(whoami(issuer, first, dpop_key), 200, "whoami with DPoP")
    check(who["sub"] == claims["sub"] and who["client_id"] == top_id, f"whoami said {who}")
    check(who["act"] == {"sub": top_id}, f"whoami act {who['act']!r}")
    step("whoami answered for the DPoP-bound token")
    bearer = whoami(issuer, first, None, scheme="Bearer")
    check(bearer.status_code == 401, f"a Bearer presentation got HTTP {bearer.status_code}")
    conform(
        bearer.headers.get("WWW-Authenticate", "").startswith("DPoP "),
        f"the Bearer refusal's challenge is {bearer.headers.get('WWW-Authenticate')!r}, not DPoP",
    )
    step("the same token as Bearer is refused with 401")
    proof = dpop_proof(dpop_key, "GET", f"{issuer}/v1/whoami", access_token=first)
    expect_json(whoami(issuer, first, dpop_key, proof=proof), 200, "whoami, first use of a proof")
    replay = whoami(issuer, first, dpop_key, proof=proof)
    check(replay.status_code in (400, 401), f"a replayed DPoP proof got HTTP {replay.status_code}")
    check(replay.json().get("error") == "invalid_dpop_proof", f"a replayed proof got {replay.text[:200]}")
    step(f"a replayed DPoP proof is refused (HTTP {replay.status_code}, invalid_dpop_proof)")
    # RFC 9449 section 7.1: a resource server refuses a bad proof with 401 and a DPoP challenge.
    conform(
        replay.status_code == 401 and "invalid_dpop_proof" in replay.headers.get("WWW-Authenticate", ""),
        f"a replayed proof at the resource got HTTP {replay.status_code} with challenge "
        f"{replay.headers.get('WWW-Authenticate')!r}; RFC 9449 section 7.1 wants 401 and "
        'WWW-Authenticate: DPoP error="invalid_dpop_proof"',
    )

    # 7. Token exchange to the sub-agent: authlib sends it, joserfc signs the actor token.
    exchanged, _ = top.token(
        lambda: {
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": first,
            "subject_token_type": ACCESS_TOKEN_TYPE,
            "actor_token": actor_token(sub_key, sub_id, issuer),
            "actor_token_type": JWT_TOKEN_TYPE,
            "scope": NARROW_SCOPE,
        }
    )
    second = exchanged["access_token"]
    check(exchanged.get("issued_token_type") == ACCESS_TOKEN_TYPE, f"issued_token_type {exchanged.get('issued_token_type')!r}")
    sub_claims = verify_access_token(second, keys, issuer)
    check(sub_claims.get("act") == {"sub": sub_id, "act": {"sub": top_id}}, f"act {sub_claims.get('act')!r}")
    check(sub_claims["scope"] == NARROW_SCOPE, f"exchanged scope {sub_claims['scope']!r}")
    check(sub_claims["exp"] <= claims["exp"], "the exchanged token outlives its subject")
    check(sub_claims["sub"] == claims["sub"], "the exchanged token names another user")
    check(sub_claims["client_id"] == sub_id, f"client_id {sub_claims['client_id']!r}")
    check(sub_claims["cnf"].get("jkt") == sub_key.thumbprint(), "cnf.jkt is not the sub-agent key's")
    step("token exchange to the sub-agent: act chain, narrower scope, bounded exp (joserfc-verified)")

    who = expect_json(whoami(issuer, second, sub_key), 200, "whoami as the sub-agent")
    check(who["act"] == {"sub": sub_id, "act": {"sub": top_id}}, f"whoami act {who['act']!r}")
    check(who["scope"] == NARROW_SCOPE, f"whoami scope {who['scope']!r}")
    step("whoami answered for the sub-agent's token under its own key")

    # 8. The sub-agent may not widen what it holds.
    sub = Agent(sub_id, sub_key, metadata, issuer, sub_key)
    try:
        sub.token(
            lambda: {
                "grant_type": TOKEN_EXCHANGE,
                "subject_token": second,
                "subject_token_type": ACCESS_TOKEN_TYPE,
                "scope": FULL_SCOPE,
            }
        )
        raise Failure("a widening exchange was granted")
    except OAuthError as error:
        check(error.error == "invalid_scope", f"a widening exchange got {error.error!r}")
        check(sub.last_response.status_code == 400, f"HTTP {sub.last_response.status_code}")
    step("a widening exchange is refused with 400 invalid_scope")

    # 9. Introspection and revocation, client-authenticated by authlib.
    url = metadata["introspection_endpoint"]
    info = expect_json(top.session.introspect_token(url, token=first), 200, "introspect")
    check(info.get("active") is True, f"introspection said {info}")
    check(info.get("client_id") == top_id, f"introspection client_id {info.get('client_id')!r}")
    step("introspection says active")
    revoked = top.session.revoke_token(metadata["revocation_endpoint"], token=first)
    check(revoked.status_code == 200, f"revoke: HTTP {revoked.status_code}: {revoked.text[:300]}")
    info = expect_json(top.session.introspect_token(url, token=first), 200, "introspect after revoke")
    check(info == {"active": False}, f"introspection after revocation said {info}")
    step("revoked; introspection says inactive")
    after = whoami(issuer, first, dpop_key)
    check(after.status_code == 401, f"the revoked token got HTTP {after.status_code} at whoami")
    step("the revoked token is refused at whoami")

    if DEVIATIONS:
        raise Failure(f"{len(DEVIATIONS)} conformance check(s) failed:\n  " + "\n  ".join(DEVIATIONS))
    print("interop flow passed", flush=True)


if __name__ == "__main__":
    try:
        main()
    except Failure as failure:
        print(f"FAIL: {failure}", file=sys.stderr, flush=True)
        sys.exit(1)
    except OAuthError as error:
        print(f"FAIL: the server refused: {error.error}: {error.description}", file=sys.stderr, flush=True)
        sys.exit(1)
