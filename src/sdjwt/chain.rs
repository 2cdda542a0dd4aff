//! Delegate SD-JWT chains: `<root>~<disclosures>~~<hop>~<disclosures>~…`.
//!
//! The root is an SD-JWT signed by a trusted issuer, chosen by `kid` from our own key set; a key
//! carried in the token is never used. Each later hop is a key-binding SD-JWT signed by the key
//! in the previous hop's delegated object (`delegate_payload[0].cnf.jwk`), bound to the previous
//! hop by `sd_hash` (SHA-256 of that hop exactly as presented, `jwt~d~…~`) or `issuer_jwt_hash`
//! (SHA-256 of its JWT alone), and carries `iat`, `aud` and `nonce`. Intermediate hops are typed
//! `kb+sd-jwt+kb` and delegate further with their own `cnf`; the closing hop is `kb+sd-jwt` and
//! carries none. The `kb-sd-jwt` spellings are accepted too.

use serde_json::{Map, Value};

use super::{resolve_owned, Disclosure, Error, MAX_CHAIN_LEN, MAX_DISCLOSURES, MAX_HOPS};
use crate::jose::{
    self, ct_eq, sha256_b64, HeaderPolicy, KeySet, PublicJwk, SigningKey, TypRule, UnverifiedJws,
};

const CLOSING_TYPS: &[&str] = &["kb+sd-jwt", "kb-sd-jwt"];
const INTERMEDIATE_TYPS: &[&str] = &["kb+sd-jwt+kb", "kb-sd-jwt+kb"];

/// What the chain checks allow; built once from configuration.
#[derive(Debug, Clone)]
pub struct ChainPolicy {
    /// `typ` values accepted on the root SD-JWT.
    pub root_typs: Vec<String>,
    /// Clock skew tolerated on `iat` and `exp`, in seconds (at most 300).
    pub skew: i64,
    /// How old the closing hop's `iat` may be, in seconds.
    pub max_closing_age: i64,
}

impl Default for ChainPolicy {
    fn default() -> Self {
        ChainPolicy {
            // `example+sd-jwt` is what the AP2 reference SDK writes; `dc+sd-jwt` what RFC 9901
            // tooling writes today.
            root_typs: vec![
                "dc+sd-jwt".into(),
                "vc+sd-jwt".into(),
                "example+sd-jwt".into(),
            ],
            skew: 60,
            max_closing_age: 300,
        }
    }
}

/// The audience and nonce the verifier expects in the closing hop.
#[derive(Debug, Clone, Copy)]
pub struct Challenge<'a> {
    /// This verifier's audience.
    pub aud: &'a str,
    /// The nonce this verifier issued.
    pub nonce: &'a str,
}

/// Where a hop sits in its chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HopKind {
    /// The issuer-signed first SD-JWT.
    Root,
    /// A key-binding hop that delegates further (`kb+sd-jwt+kb`).
    Intermediate,
    /// The key-binding hop that closes the chain (`kb+sd-jwt`).
    Closing,
}

/// One hop as presented: the SD-JWT text and its parts.
#[derive(Debug, Clone)]
struct Segment<'a> {
    /// `jwt~d1~…~dn~`, exactly as presented (what `sd_hash` covers).
    text: &'a str,
    jwt: &'a str,
    disclosures: Vec<&'a str>,
}

/// A chain split into hops; nothing in it has been checked, and nothing of it can be read.
#[derive(Debug, Clone)]
pub struct UnverifiedChain<'a> {
    segments: Vec<Segment<'a>>,
}

impl<'a> UnverifiedChain<'a> {
    /// Splits a compact chain within the size limits.
    pub fn parse(chain: &'a str) -> Result<Self, Error> {
        if chain.len() > MAX_CHAIN_LEN {
            return Err(Error::TooLarge);
        }
        // A chain ends with its last hop's single `~`; a trailing `~~` would announce an
        // empty hop and give one chain two spellings.
        if !chain.ends_with('~') || chain.ends_with("~~") {
            return Err(Error::Malformed);
        }
        let mut segments = Vec::new();
        let mut start = 0;
        while start < chain.len() {
            if segments.len() == MAX_HOPS {
                return Err(Error::TooLarge);
            }
            // A segment ends at the first `~` of the next `~~`, or at the final `~`.
            let end = chain[start..]
                .find("~~")
                .map_or(chain.len(), |i| start + i + 1);
            segments.push(Segment::parse(&chain[start..end])?);
            start = end + 1;
        }
        if segments.is_empty() {
            return Err(Error::Malformed);
        }
        Ok(UnverifiedChain { segments })
    }

    /// Each hop's JWT, disclosures and presented text, for [`crate::danger`] only.
    pub(crate) fn insecure_parts(
        &self,
    ) -> impl Iterator<Item = (&'a str, &[&'a str], &'a str)> + '_ {
        self.segments
            .iter()
            .map(|s| (s.jwt, s.disclosures.as_slice(), s.text))
    }

    /// How many hops the chain has, root included.
    pub fn hop_count(&self) -> usize {
        self.segments.len()
    }

    /// The last hop exactly as presented (`jwt~d~…~`): what a receipt's `reference` hashes.
    pub fn last_segment(&self) -> &'a str {
        self.segments[self.segments.len() - 1].text
    }

    /// The first hop exactly as presented: what `payment.reference` names for an open checkout.
    pub fn first_segment(&self) -> &'a str {
        self.segments[0].text
    }

    /// The closing hop's compact JWT, unchecked; `None` for a root alone. Only for choosing
    /// which issued challenge to verify against ([`crate::danger::insecure_string_claim`]).
    pub fn closing_jwt(&self) -> Option<&'a str> {
        (self.segments.len() > 1).then(|| self.segments[self.segments.len() - 1].jwt)
    }

    /// Verifies every hop in order; see the module documentation for the rules.
    ///
    /// `challenge` is `None` only for a chain that is a root alone (a mandate the issuer signed
    /// closed); a chain with key-binding hops needs the challenge, and a root alone refuses one.
    pub fn verify(
        &self,
        policy: &ChainPolicy,
        issuers: &KeySet,
        challenge: Option<&Challenge<'_>>,
        now: i64,
    ) -> Result<VerifiedChain, Error> {
        let last = self.segments.len() - 1;
        if (last == 0) != challenge.is_none() {
            return Err(Error::ChallengeMismatch);
        }

        let root = self.verify_root(policy, issuers, now)?;
        let mut hops = vec![root];
        for (i, segment) in self.segments.iter().enumerate().skip(1) {
            let kind = if i == last {
                HopKind::Closing
            } else {
                HopKind::Intermediate
            };
            let previous = Previous {
                hop: &hops[i - 1],
                jwt: self.segments[i - 1].jwt,
            };
            let hop = segment.verify_hop(kind, previous, policy, now)?;
            if let (HopKind::Closing, Some(c)) = (kind, challenge) {
                check_challenge(&hop.claims, c)?;
            }
            hops.push(hop);
        }
        Ok(VerifiedChain { hops })
    }

    fn verify_root(
        &self,
        policy: &ChainPolicy,
        issuers: &KeySet,
        now: i64,
    ) -> Result<VerifiedHop, Error> {
        let segment = &self.segments[0];
        let typs: Vec<&str> = policy.root_typs.iter().map(String::as_str).collect();
        let jws = UnverifiedJws::parse(
            segment.jwt,
            &HeaderPolicy::trusted_key(TypRule::OneOf(&typs)),
        )?;
        let kid = jws.header().kid().ok_or(Error::UntrustedIssuer)?.to_owned();
        let verified = issuers.verify(jws).map_err(|e| match e {
            jose::Error::UnknownKeyId | jose::Error::MissingKeyId => Error::UntrustedIssuer,
            other => other.into(),
        })?;
        let signing_input = verified.signing_input();
        let hop = segment.finish(
            HopKind::Root,
            Some(kid),
            verified.into_claims(),
            signing_input,
        )?;
        check_times(&hop.claims, policy, now)?;
        check_times(&hop.delegate, policy, now)?;
        Ok(hop)
    }
}

impl<'a> Segment<'a> {
    fn parse(text: &'a str) -> Result<Self, Error> {
        let body = text.strip_suffix('~').ok_or(Error::Malformed)?;
        let mut parts = body.split('~');
        let jwt = parts
            .next()
            .filter(|j| !j.is_empty())
            .ok_or(Error::Malformed)?;
        let disclosures: Vec<&str> = parts.collect();
        if disclosures.len() > MAX_DISCLOSURES {
            return Err(Error::TooLarge);
        }
        if disclosures.iter().any(|d| d.is_empty()) {
            return Err(Error::Malformed);
        }
        Ok(Segment {
            text,
            jwt,
            disclosures,
        })
    }

    fn verify_hop(
        &self,
        kind: HopKind,
        previous: Previous<'_>,
        policy: &ChainPolicy,
        now: i64,
    ) -> Result<VerifiedHop, Error> {
        let typs = if kind == HopKind::Closing {
            CLOSING_TYPS
        } else {
            INTERMEDIATE_TYPS
        };
        let header_policy = HeaderPolicy::trusted_key(TypRule::OneOf(typs));
        let jws = UnverifiedJws::parse(self.jwt, &header_policy).map_err(|e| match e {
            jose::Error::UnexpectedType => Error::HopTypeMismatch,
            other => other.into(),
        })?;
        let kid = jws.header().kid().map(str::to_owned);
        let verified = jws.verify(previous.hop.confirmation_key()?)?;
        let signing_input = verified.signing_input();
        let claims = verified.into_claims();
        check_binding(&claims, previous)?;

        let hop = self.finish(kind, kid, claims, signing_input)?;
        for name in ["aud", "nonce"] {
            non_empty_string(&hop.claims, name)?;
        }
        let iat = hop
            .claims
            .get("iat")
            .and_then(Value::as_i64)
            .ok_or(Error::MissingClaim("iat"))?;
        check_times(&hop.claims, policy, now)?;
        check_times(&hop.delegate, policy, now)?;
        if kind == HopKind::Closing && now.saturating_sub(iat) > policy.max_closing_age {
            return Err(Error::TooOld);
        }
        match (kind, hop.delegate.contains_key("cnf")) {
            (HopKind::Closing, true) => Err(Error::UnexpectedConfirmationKey),
            (HopKind::Intermediate, false) => Err(Error::MissingConfirmationKey),
            _ => Ok(hop),
        }
    }

    /// Resolves the disclosures and picks out the delegated object.
    fn finish(
        &self,
        kind: HopKind,
        kid: Option<String>,
        payload: Map<String, Value>,
        signing_input: &str,
    ) -> Result<VerifiedHop, Error> {
        let disclosures = self
            .disclosures
            .iter()
            .map(|d| Disclosure::parse(d))
            .collect::<Result<Vec<_>, _>>()?;
        let mut claims = resolve_owned(payload, disclosures)?;
        let delegate = match claims.remove("delegate_payload") {
            Some(Value::Array(mut items)) if items.len() == 1 => match items.pop() {
                Some(Value::Object(obj)) => obj,
                _ => return Err(Error::MissingDelegatePayload),
            },
            _ => return Err(Error::MissingDelegatePayload),
        };
        let cnf = match delegate.get("cnf") {
            None => None,
            Some(cnf) => {
                let jwk = cnf.get("jwk").ok_or(Error::MissingConfirmationKey)?;
                Some(PublicJwk::from_value(jwk).map_err(Error::Jws)?)
            }
        };
        Ok(VerifiedHop {
            kind,
            kid,
            claims,
            delegate,
            cnf,
            text: self.text.to_owned(),
            signing_input: signing_input.to_owned(),
        })
    }
}

/// A chain whose every signature, binding, disclosure and time check passed.
#[derive(Debug, Clone)]
pub struct VerifiedChain {
    hops: Vec<VerifiedHop>,
}

impl VerifiedChain {
    /// The hops, root first.
    pub fn hops(&self) -> &[VerifiedHop] {
        &self.hops
    }

    /// The root hop.
    pub fn root(&self) -> &VerifiedHop {
        &self.hops[0]
    }

    /// The last hop (the root itself for a chain of one).
    pub fn last(&self) -> &VerifiedHop {
        // A verified chain has at least its root: `parse` refuses an empty chain.
        &self.hops[self.hops.len() - 1]
    }
}

/// One verified hop.
#[derive(Debug, Clone)]
pub struct VerifiedHop {
    kind: HopKind,
    kid: Option<String>,
    claims: Map<String, Value>,
    delegate: Map<String, Value>,
    cnf: Option<PublicJwk>,
    text: String,
    signing_input: String,
}

/// What a hop needs of the one before it.
#[derive(Clone, Copy)]
struct Previous<'h> {
    hop: &'h VerifiedHop,
    jwt: &'h str,
}

impl VerifiedHop {
    /// Where the hop sits.
    pub fn kind(&self) -> HopKind {
        self.kind
    }

    /// The header `kid` (for the root: the trusted issuer key that verified it).
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The hop's own claims with disclosures resolved, without `delegate_payload`.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }

    /// The delegated object (`delegate_payload[0]`), disclosures resolved: the mandate.
    pub fn delegate(&self) -> &Map<String, Value> {
        &self.delegate
    }

    /// SHA-256 of the hop as presented (`jwt~d~…~`): what the next hop's `sd_hash` names.
    pub fn segment_hash(&self) -> String {
        sha256_b64(self.text.as_bytes())
    }

    /// SHA-256 of the hop's signed bytes: a stable identity that signature malleability and
    /// disclosure choices cannot change.
    pub fn signed_hash(&self) -> String {
        sha256_b64(self.signing_input.as_bytes())
    }

    /// The key this hop delegates to (`cnf.jwk` of its delegated object).
    pub fn confirmation_key(&self) -> Result<&PublicJwk, Error> {
        self.cnf.as_ref().ok_or(Error::MissingConfirmationKey)
    }
}

/// Signs one SD-JWT segment: returns `jwt~d1~…~dn~`. Join segments into a chain with `~`.
pub fn sign_segment(
    key: &SigningKey,
    typ: &str,
    payload: &Map<String, Value>,
    disclosures: &[Disclosure],
) -> Result<String, jose::Error> {
    let body = Value::Object(payload.clone()).to_string();
    let mut out = jose::sign_compact(key, Some(typ), false, body.as_bytes())?;
    out.push('~');
    for d in disclosures {
        out.push_str(d.encoded());
        out.push('~');
    }
    Ok(out)
}

fn check_binding(claims: &Map<String, Value>, previous: Previous<'_>) -> Result<(), Error> {
    let (expected, found) = match (claims.get("sd_hash"), claims.get("issuer_jwt_hash")) {
        (Some(Value::String(h)), None) => (previous.hop.segment_hash(), h),
        (None, Some(Value::String(h))) => (sha256_b64(previous.jwt.as_bytes()), h),
        _ => return Err(Error::BindingMismatch),
    };
    if ct_eq(expected.as_bytes(), found.as_bytes()) {
        Ok(())
    } else {
        Err(Error::BindingMismatch)
    }
}

fn check_challenge(claims: &Map<String, Value>, challenge: &Challenge<'_>) -> Result<(), Error> {
    let aud = non_empty_string(claims, "aud")?;
    if aud.as_bytes() != challenge.aud.as_bytes() {
        return Err(Error::AudienceMismatch);
    }
    let nonce = non_empty_string(claims, "nonce")?;
    if !ct_eq(nonce.as_bytes(), challenge.nonce.as_bytes()) {
        return Err(Error::NonceMismatch);
    }
    Ok(())
}

/// `iat` must not be in the future, `exp` must not have passed, both beyond `skew`.
/// At `now == exp` a token is expired (RFC 7519 §4.1.4: now must be before `exp`).
fn check_times(claims: &Map<String, Value>, policy: &ChainPolicy, now: i64) -> Result<(), Error> {
    if let Some(iat) = claims.get("iat") {
        let iat = iat.as_i64().ok_or(Error::MissingClaim("iat"))?;
        if iat > now.saturating_add(policy.skew) {
            return Err(Error::IssuedInFuture);
        }
    }
    if let Some(exp) = claims.get("exp") {
        let exp = exp.as_i64().ok_or(Error::MissingClaim("exp"))?;
        if now >= exp.saturating_add(policy.skew) {
            return Err(Error::Expired);
        }
    }
    Ok(())
}

fn non_empty_string<'m>(
    claims: &'m Map<String, Value>,
    name: &'static str,
) -> Result<&'m str, Error> {
    match claims.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        _ => Err(Error::MissingClaim(name)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::mandate::build::{close, issue, join};

    const NOW: i64 = 1_780_000_000;

    struct Fixture {
        issuers: KeySet,
        root: SigningKey,
        agent: SigningKey,
    }

    fn fixture() -> Fixture {
        let root = SigningKey::generate(Some("wallet-1".into())).unwrap();
        let agent = SigningKey::generate(Some("agent-1".into())).unwrap();
        let mut issuers = KeySet::new();
        issuers.insert(root.public().clone()).unwrap();
        Fixture {
            issuers,
            root,
            agent,
        }
    }

    fn open(f: &Fixture, exp: i64) -> String {
        let mandate = json!({"vct": "mandate.payment.open.1", "constraints": [
            {"type": "payment.allowed_payees", "allowed": [{"id": "a", "name": "A"}, {"id": "b", "name": "B"}]}],
            "cnf": {"jwk": f.agent.public().to_value()}, "iat": NOW - 60, "exp": exp});
        issue(&f.root, "dc+sd-jwt", Map::new(), mandate).unwrap()
    }

    fn verify(
        f: &Fixture,
        chain: &str,
        policy: &ChainPolicy,
        now: i64,
    ) -> Result<VerifiedChain, Error> {
        let challenge = Challenge {
            aud: "https://v.example",
            nonce: "n-1",
        };
        UnverifiedChain::parse(chain)?.verify(policy, &f.issuers, Some(&challenge), now)
    }

    fn closed(f: &Fixture, root: &str, iat: i64) -> String {
        let closing = close(
            &f.agent,
            root,
            json!({"vct": "mandate.payment.1"}),
            "https://v.example",
            "n-1",
            iat,
        );
        join(&[root, &closing.unwrap()])
    }

    #[test]
    fn exactly_at_exp_is_expired_and_one_second_before_is_not() {
        let f = fixture();
        let strict = ChainPolicy {
            skew: 0,
            ..ChainPolicy::default()
        };
        let root = open(&f, NOW);
        assert_eq!(
            verify(&f, &closed(&f, &root, NOW - 1), &strict, NOW).unwrap_err(),
            Error::Expired
        );
        assert!(verify(&f, &closed(&f, &root, NOW - 1), &strict, NOW - 1).is_ok());
    }

    #[test]
    fn iat_just_past_the_skew_is_in_the_future() {
        let f = fixture();
        let policy = ChainPolicy::default();
        let root = open(&f, NOW + 3600);
        let at_edge = closed(&f, &root, NOW + policy.skew);
        assert!(verify(&f, &at_edge, &policy, NOW).is_ok());
        let past_edge = closed(&f, &root, NOW + policy.skew + 1);
        assert_eq!(
            verify(&f, &past_edge, &policy, NOW).unwrap_err(),
            Error::IssuedInFuture
        );
    }

    #[test]
    fn kid_selects_only_among_trusted_keys() {
        let f = fixture();
        let policy = ChainPolicy::default();
        let impostor = SigningKey::generate(Some("wallet-1".into())).unwrap();
        let forged = Fixture {
            issuers: f.issuers.clone(),
            root: impostor,
            agent: f.agent,
        };
        let chain = closed(&forged, &open(&forged, NOW + 3600), NOW);
        assert_eq!(
            verify(&forged, &chain, &policy, NOW).unwrap_err(),
            Error::Jws(jose::Error::InvalidSignature)
        );

        for kid in [
            None,
            Some("wallet-\u{FF11}"),
            Some("Wallet-1"),
            Some("wallet-1 "),
        ] {
            let f = fixture();
            let renamed = SigningKey::from_jwk(&{
                let mut jwk: Value =
                    serde_json::from_str(&f.root.to_private_jwk().unwrap()).unwrap();
                match kid {
                    Some(k) => jwk["kid"] = json!(k),
                    None => {
                        jwk.as_object_mut().unwrap().remove("kid");
                    }
                }
                jwk
            })
            .unwrap();
            let g = Fixture {
                issuers: f.issuers,
                root: renamed,
                agent: f.agent,
            };
            let chain = closed(&g, &open(&g, NOW + 3600), NOW);
            assert_eq!(
                verify(&g, &chain, &policy, NOW).unwrap_err(),
                Error::UntrustedIssuer,
                "{kid:?}"
            );
        }
    }

    #[test]
    fn a_remembered_root_skips_nothing_but_the_repeat_verification() {
        let mut f = fixture();
        f.issuers = f.issuers.clone().remember_verified(16);
        let policy = ChainPolicy::default();
        let root = open(&f, NOW + 3600);
        assert!(verify(&f, &closed(&f, &root, NOW), &policy, NOW).is_ok());
        assert!(
            verify(&f, &closed(&f, &root, NOW), &policy, NOW).is_ok(),
            "remembered root"
        );

        // Same signed bytes, another signature: verified afresh, and refused.
        let (jwt, rest) = root.split_once('~').unwrap();
        let (input, _) = jwt.rsplit_once('.').unwrap();
        let bogus = format!("{input}.{}~{rest}", crate::jose::b64::encode([1u8; 64]));
        let err = verify(&f, &closed(&f, &bogus, NOW), &policy, NOW).unwrap_err();
        assert_eq!(err, Error::Jws(jose::Error::InvalidSignature));

        // The remembered signature over other bytes: refused.
        let sig = jwt.rsplit_once('.').unwrap().1;
        let other = open(&f, NOW + 7200);
        let other_input = other.split('~').next().unwrap().rsplit_once('.').unwrap().0;
        let spliced = format!("{other_input}.{sig}~{}", other.split_once('~').unwrap().1);
        let err = verify(&f, &closed(&f, &spliced, NOW), &policy, NOW).unwrap_err();
        assert_eq!(err, Error::Jws(jose::Error::InvalidSignature));

        // Times are still checked on a remembered root.
        assert_eq!(
            verify(&f, &closed(&f, &root, NOW), &policy, NOW + 7200).unwrap_err(),
            Error::Expired
        );
    }

    #[test]
    fn reordered_root_disclosures_break_the_binding() {
        let f = fixture();
        let root = open(&f, NOW + 3600);
        let chain = closed(&f, &root, NOW);
        assert!(verify(&f, &chain, &ChainPolicy::default(), NOW).is_ok());
        let (jwt, rest) = root.split_once('~').unwrap();
        let mut disclosures: Vec<&str> = rest.trim_end_matches('~').split('~').collect();
        disclosures.swap(0, 1);
        let reordered = format!("{jwt}~{}~{}", disclosures.join("~"), &chain[root.len()..]);
        assert_eq!(
            verify(&f, &reordered, &ChainPolicy::default(), NOW).unwrap_err(),
            Error::BindingMismatch
        );
    }

    #[test]
    fn a_chain_with_hops_needs_a_challenge_and_a_lone_root_refuses_one() {
        let f = fixture();
        let chain = closed(&f, &open(&f, NOW + 3600), NOW);
        let parsed = UnverifiedChain::parse(&chain).unwrap();
        let err = parsed
            .verify(&ChainPolicy::default(), &f.issuers, None, NOW)
            .unwrap_err();
        assert_eq!(err, Error::ChallengeMismatch);
    }

    #[test]
    fn trailing_empty_hop_is_refused() {
        assert_eq!(
            UnverifiedChain::parse("a.b.c~~").unwrap_err(),
            Error::Malformed
        );
        assert_eq!(UnverifiedChain::parse("-~~").unwrap_err(), Error::Malformed);
        assert_eq!(
            UnverifiedChain::parse("a.b.c~d~~e.f.g~~").unwrap_err(),
            Error::Malformed
        );
    }

    #[test]
    fn hops_split_on_double_tilde() {
        assert_eq!(UnverifiedChain::parse("a.b.c~").unwrap().hop_count(), 1);
        assert_eq!(
            UnverifiedChain::parse("a.b.c~~e.f.g~").unwrap().hop_count(),
            2
        );
        assert_eq!(
            UnverifiedChain::parse("a.b.c~d~~e.f.g~h~")
                .unwrap()
                .hop_count(),
            2
        );
        assert_eq!(
            UnverifiedChain::parse("a.b.c~~~e.f.g~").unwrap_err(),
            Error::Malformed
        );
        assert_eq!(
            UnverifiedChain::parse("a.b.c").unwrap_err(),
            Error::Malformed
        );
    }
}
