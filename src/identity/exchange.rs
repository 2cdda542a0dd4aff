//! The narrowing rules of token exchange (RFC 8693 §2.1) and of RFC 9396
//! `authorization_details`: what a new token may carry given the token it comes from.
//!
//! Scope: granted = requested ∩ subject's ∩ the new actor's allowed; asking for anything outside
//! is refused, never trimmed. Authorization details: each requested entry must be at most one
//! of the subject's entries of the same `type` (lower amount cap, fewer merchants, earlier end,
//! every other member equal); a member we do not know how to compare must be equal. Actors:
//! appended, never replaced, with no agent twice and within every agent's depth limit. Pure
//! functions; the errors are fixed descriptions of the rule that refused.

use serde_json::Value;

/// Members compared as "at most" (integers: caps and end times).
const UPPER_BOUNDS: &[&str] = &["valid_until", "expires_at", "max_uses"];

/// Members compared as subsets (arrays of strings).
const SUBSETS: &[&str] = &["merchants", "payees", "locations", "actions", "instruments"];

/// The scope of the new token.
pub fn narrow_scope(
    requested: Option<&[String]>,
    subject: &[String],
    actor_allowed: &[String],
) -> Result<Vec<String>, &'static str> {
    let allowed = |s: &String| subject.contains(s) && actor_allowed.contains(s);
    let granted: Vec<String> = match requested {
        Some(requested) => {
            if let Some(_wider) = requested.iter().find(|s| !subject.contains(s)) {
                return Err("requested scope exceeds the subject token's scope");
            }
            if requested.iter().any(|s| !actor_allowed.contains(s)) {
                return Err("requested scope exceeds what the acting agent may hold");
            }
            requested.to_vec()
        }
        None => subject.iter().filter(|s| allowed(s)).cloned().collect(),
    };
    if granted.is_empty() {
        return Err("no scope would remain");
    }
    Ok(granted)
}

/// The authorization details of the new token: the subject's, or a narrower request.
pub fn narrow_details(
    requested: Option<&Value>,
    subject: Option<&Value>,
) -> Result<Option<Value>, &'static str> {
    let Some(requested) = requested else {
        return Ok(subject.cloned());
    };
    let entries = requested
        .as_array()
        .filter(|a| !a.is_empty())
        .ok_or("authorization_details must be a non-empty array")?;
    let Some(held) = subject.and_then(Value::as_array) else {
        return Err("authorization_details requested where the subject holds none");
    };
    for entry in entries {
        if entry.get("type").and_then(Value::as_str).is_none() {
            return Err("authorization_details entry without a type");
        }
        if !held.iter().any(|h| entry_within(entry, h)) {
            return Err("authorization_details would widen the subject's authority");
        }
    }
    Ok(Some(requested.clone()))
}

/// Whether `entry` grants no more than `held`.
fn entry_within(entry: &Value, held: &Value) -> bool {
    let (Some(entry), Some(held)) = (entry.as_object(), held.as_object()) else {
        return false;
    };
    // Every member the subject limits must be limited at least as much.
    let kept = held.iter().all(|(name, limit)| {
        entry
            .get(name)
            .is_some_and(|v| member_within(name, v, limit))
    });
    // A member the subject does not have may only restrict (a known list or bound).
    let added = entry
        .keys()
        .filter(|name| !held.contains_key(*name))
        .all(|name| SUBSETS.contains(&name.as_str()) || UPPER_BOUNDS.contains(&name.as_str()));
    kept && added
}

fn member_within(name: &str, value: &Value, limit: &Value) -> bool {
    if name == "max_amount" {
        return amount_within(value, limit);
    }
    if UPPER_BOUNDS.contains(&name) {
        return matches!((value.as_i64(), limit.as_i64()), (Some(v), Some(l)) if v <= l);
    }
    if SUBSETS.contains(&name) {
        return match (value.as_array(), limit.as_array()) {
            (Some(v), Some(l)) => v.iter().all(|item| item.is_string() && l.contains(item)),
            _ => false,
        };
    }
    value == limit
}

/// `{"currency", "value"}` with `value` in minor units: same currency, not more.
fn amount_within(value: &Value, limit: &Value) -> bool {
    let currency = |v: &Value| v.get("currency").and_then(Value::as_str).map(str::to_owned);
    let minor = |v: &Value| v.get("value").and_then(Value::as_i64).filter(|m| *m >= 0);
    let same_shape = value.as_object().is_some_and(|o| o.len() == 2);
    match (currency(value), minor(value), currency(limit), minor(limit)) {
        (Some(c), Some(v), Some(lc), Some(l)) => same_shape && c == lc && v <= l,
        _ => false,
    }
}

/// The `act` chain of the new token: `new_actor` in front of `chain`.
///
/// `depth_limit(agent)` is that agent's `max_delegation_depth`, or `None` for an actor that is
/// not a registered agent (an external one, which bounds nothing of ours). No agent may appear
/// twice (a sub-agent may not name itself as an earlier actor), and no agent may end up with
/// more hops below it than its limit, nor the chain be longer than `hard_max`.
pub fn append_actor(
    chain: &[String],
    new_actor: &str,
    depth_limit: impl Fn(&str) -> Option<i64>,
    hard_max: usize,
) -> Result<Vec<String>, &'static str> {
    if chain.iter().any(|a| a == new_actor) {
        return Err("an agent may not appear twice in an act chain");
    }
    let mut actors = Vec::with_capacity(chain.len() + 1);
    actors.push(new_actor.to_owned());
    actors.extend(chain.iter().cloned());
    if actors.len() > hard_max {
        return Err("delegation chain longer than this service allows");
    }
    for (position, agent) in actors.iter().enumerate() {
        if depth_limit(agent).is_some_and(|limit| position as i64 > limit) {
            return Err("delegation deeper than an agent of the chain allows");
        }
    }
    Ok(actors)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn s(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn scope_is_the_request_when_it_fits_and_refused_when_it_widens() {
        let subject = s(&["a", "b", "c"]);
        let actor = s(&["a", "b"]);
        assert_eq!(
            narrow_scope(Some(&s(&["a"])), &subject, &actor),
            Ok(s(&["a"]))
        );
        assert_eq!(narrow_scope(None, &subject, &actor), Ok(s(&["a", "b"])));
        assert!(narrow_scope(Some(&s(&["d"])), &subject, &actor).is_err());
        assert!(narrow_scope(Some(&s(&["c"])), &subject, &actor).is_err());
        assert!(narrow_scope(None, &s(&["c"]), &actor).is_err());
    }

    #[test]
    fn details_narrow_by_amount_merchants_and_time() {
        let held = json!([{"type": "payment", "max_amount": {"currency": "USD", "value": 10000},
                           "merchants": ["m1", "m2"], "valid_until": 2000}]);
        let narrower = json!([{"type": "payment", "max_amount": {"currency": "USD", "value": 5000},
                               "merchants": ["m1"], "valid_until": 1500}]);
        assert_eq!(
            narrow_details(Some(&narrower), Some(&held)),
            Ok(Some(narrower.clone()))
        );
        assert_eq!(narrow_details(None, Some(&held)), Ok(Some(held.clone())));

        let widen = |patch: Value| {
            let mut entry = narrower[0].clone();
            for (k, v) in patch.as_object().unwrap() {
                entry[k] = v.clone();
            }
            narrow_details(Some(&json!([entry])), Some(&held))
        };
        assert!(widen(json!({"max_amount": {"currency": "USD", "value": 10001}})).is_err());
        assert!(widen(json!({"max_amount": {"currency": "EUR", "value": 1}})).is_err());
        assert!(widen(json!({"merchants": ["m1", "m3"]})).is_err());
        assert!(widen(json!({"valid_until": 2001})).is_err());
        assert!(widen(json!({"type": "other"})).is_err());
        assert!(widen(json!({"unknown": true})).is_err());

        let mut dropped = narrower[0].clone();
        dropped.as_object_mut().unwrap().remove("merchants");
        assert!(narrow_details(Some(&json!([dropped])), Some(&held)).is_err());
        assert!(narrow_details(Some(&narrower), None).is_err());
    }

    #[test]
    fn actors_append_within_depth_and_never_repeat() {
        let limits = |a: &str| match a {
            "top" => Some(1),
            _ => Some(5),
        };
        assert_eq!(
            append_actor(&s(&["top"]), "sub", limits, 8),
            Ok(s(&["sub", "top"]))
        );
        assert!(append_actor(&s(&["sub", "top"]), "subsub", limits, 8).is_err());
        assert!(append_actor(&s(&["top"]), "top", limits, 8).is_err());
        assert!(append_actor(&s(&["x", "y"]), "z", |_| None, 2).is_err());
    }
}
