//! Faithful JSON for payloads: what `publish` reads and what `consume`, `tail`, `dlq list` and
//! `scheduled list` print.
//!
//! - Numbers are stored exactly as written or refused: an integer must fit in 64 bits, and a
//!   number with a fraction or an exponent must be the shortest form of a 64-bit float (so that
//!   it prints back the same). `-1.5e-300` is stored as that double; `184467440737095516150` and
//!   `0.1000000000000000000001` are refused with a message saying to send them as strings.
//! - MessagePack that JSON cannot say prints under a `$`-marker, losslessly (`docs/cli.md`):
//!   binary as `{"$base64": "..."}`, extension types as `{"$ext": <type>, "$base64": "..."}`,
//!   maps with keys that are not strings as `{"$map": [[key, value], ...]}`, and non-finite
//!   floats as `{"$float": "NaN" | "inf" | "-inf"}`. `publish` reads `{"$base64": "..."}` back
//!   as binary, so binary payloads round-trip.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{json, Map, Value};

/// Parses one JSON document, refusing numbers that would not be stored exactly.
pub(crate) fn parse(text: &str) -> Result<Value, String> {
    check_numbers(text)?;
    serde_json::from_str(text).map_err(|e| e.to_string())
}

/// Every number literal of `text` (outside strings) is exact as an `i64`, a `u64` or an `f64`.
fn check_numbers(text: &str) -> Result<(), String> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < bytes.len() && matches!(bytes[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') {
                    i += 1;
                }
                check_number(&text[start..i])?;
            }
            _ => i += 1,
        }
    }
    Ok(())
}

fn check_number(literal: &str) -> Result<(), String> {
    let integer = !literal.contains(['.', 'e', 'E']);
    if integer {
        if literal.starts_with('-') && literal[1..].bytes().all(|b| b == b'0') {
            // JSON parsers read `-0` as the float -0.0: it would not come back as an integer.
            return Err(format!("{literal} would be stored as the float -0.0: write 0"));
        }
        if literal.parse::<i64>().is_ok() || literal.parse::<u64>().is_ok() {
            return Ok(());
        }
        return Err(format!("the integer {literal} does not fit in 64 bits: send it as a string"));
    }
    let Ok(float) = literal.parse::<f64>() else {
        return Ok(()); // not a number after all: the JSON parser says what is wrong
    };
    if float.is_finite() && same_decimal(literal, &format!("{float:e}")) {
        Ok(())
    } else {
        Err(format!(
            "the number {literal} cannot be stored exactly as a 64-bit float (it would become {float:e}): \
             send it as a string"
        ))
    }
}

/// True when two decimal literals denote the same number (`1.50e2` and `150`).
fn same_decimal(a: &str, b: &str) -> bool {
    normalize(a) == normalize(b)
}

/// A decimal literal as (negative, significant digits, exponent of the last digit).
fn normalize(literal: &str) -> (bool, String, i64) {
    let (negative, rest) = match literal.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, literal.strip_prefix('+').unwrap_or(literal)),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(at) => (&rest[..at], rest[at + 1..].parse::<i64>().unwrap_or(i64::MAX)),
        None => (rest, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{whole}{fraction}");
    let mut exponent = exponent.saturating_sub(fraction.len() as i64);
    let digits = digits.trim_start_matches('0');
    let trimmed = digits.trim_end_matches('0');
    exponent = exponent.saturating_add((digits.len() - trimmed.len()) as i64);
    if trimmed.is_empty() {
        return (false, String::new(), 0); // zero, whatever its sign
    }
    (negative, trimmed.to_owned(), exponent)
}

/// `value` as MessagePack, `{"$base64": "..."}` as binary.
pub(crate) fn to_msgpack(value: &Value) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    write(&mut out, value).map_err(|e| e.to_string())?;
    Ok(out)
}

fn write(out: &mut Vec<u8>, value: &Value) -> Result<(), Box<dyn std::error::Error>> {
    use rmp::encode;
    match value {
        Value::Null => encode::write_nil(out)?,
        Value::Bool(b) => encode::write_bool(out, *b)?,
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                encode::write_uint(out, u)?;
            } else if let Some(i) = n.as_i64() {
                encode::write_sint(out, i)?;
            } else {
                encode::write_f64(out, n.as_f64().unwrap_or(f64::NAN))?;
            }
        }
        Value::String(s) => encode::write_str(out, s)?,
        Value::Array(items) => {
            encode::write_array_len(out, u32::try_from(items.len())?)?;
            for item in items {
                write(out, item)?;
            }
        }
        Value::Object(map) => match binary(map) {
            Some(encoded) => {
                let bytes = BASE64.decode(encoded).map_err(|e| format!("`$base64` is not base64: {e}"))?;
                encode::write_bin(out, &bytes)?;
            }
            None => {
                encode::write_map_len(out, u32::try_from(map.len())?)?;
                for (k, v) in map {
                    encode::write_str(out, k)?;
                    write(out, v)?;
                }
            }
        },
    }
    Ok(())
}

/// The base64 text of `{"$base64": "..."}` (and nothing else in the object).
fn binary(map: &Map<String, Value>) -> Option<&str> {
    match (map.len(), map.get("$base64")) {
        (1, Some(Value::String(s))) => Some(s),
        _ => None,
    }
}

/// Bytes as `{"$base64": "..."}`.
pub(crate) fn base64(bytes: &[u8]) -> Value {
    json!({ "$base64": BASE64.encode(bytes) })
}

/// A MessagePack payload as JSON, losslessly (see the module docs); `None` when it is not
/// MessagePack.
pub(crate) fn from_msgpack(bytes: &[u8]) -> Option<Value> {
    let mut reader = bytes;
    let value = rmpv::decode::read_value(&mut reader).ok()?;
    reader.is_empty().then(|| convert(value))
}

fn convert(value: rmpv::Value) -> Value {
    use rmpv::Value as M;
    match value {
        M::Nil => Value::Null,
        M::Boolean(b) => Value::Bool(b),
        M::Integer(i) => match (i.as_u64(), i.as_i64()) {
            (Some(u), _) => json!(u),
            (_, Some(i)) => json!(i),
            _ => Value::Null,
        },
        M::F32(f) => float(f64::from(f)),
        M::F64(f) => float(f),
        M::String(s) => {
            if s.is_str() {
                Value::String(s.into_str().unwrap_or_default())
            } else {
                // A MessagePack string that is not UTF-8: its bytes, as binary would print.
                base64(&s.into_bytes())
            }
        }
        M::Binary(b) => base64(&b),
        M::Array(items) => Value::Array(items.into_iter().map(convert).collect()),
        M::Map(pairs) => {
            // A map whose keys are strings prints as an object, unless a key starts with `$`:
            // it would read as one of the markers (`{"$base64": ..}` as binary).
            if pairs.iter().all(|(k, _)| k.as_str().is_some_and(|k| !k.starts_with('$'))) {
                let map = pairs
                    .into_iter()
                    .map(|(k, v)| (k.as_str().unwrap_or_default().to_owned(), convert(v)))
                    .collect::<Map<_, _>>();
                Value::Object(map)
            } else {
                json!({ "$map": pairs.into_iter().map(|(k, v)| json!([convert(k), convert(v)])).collect::<Vec<_>>() })
            }
        }
        M::Ext(kind, data) => json!({ "$ext": kind, "$base64": BASE64.encode(data) }),
    }
}

fn float(f: f64) -> Value {
    match serde_json::Number::from_f64(f) {
        Some(n) => Value::Number(n),
        None if f.is_nan() => json!({ "$float": "NaN" }),
        None if f > 0.0 => json!({ "$float": "inf" }),
        None => json!({ "$float": "-inf" }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_exact_or_refused() {
        for ok in ["-1.5e-300", "0.1", "1e3", "150", "-9223372036854775808", "18446744073709551615", "2.5", "1E-7"] {
            check_numbers(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["184467440737095516150", "-9223372036854775809", "0.1000000000000000000001", "1e400", "-0", "-00"] {
            assert!(check_numbers(bad).is_err(), "{bad} accepted");
        }
        // Numbers inside strings are text.
        check_numbers(r#"{"a": "184467440737095516150", "b\"": 1}"#).unwrap();
        // Extreme exponents do not overflow.
        assert!(check_numbers("0.5e-9223372036854775808").is_err());
        check_numbers("0").unwrap();
    }

    #[test]
    fn msgpack_round_trips_through_json() {
        let text = r#"{"n":-1.5e-300,"big":18446744073709551615,"neg":-5,"bin":{"$base64":"AAEC/w=="},"s":"é"}"#;
        let value = parse(text).unwrap();
        let packed = to_msgpack(&value).unwrap();
        let back = from_msgpack(&packed).unwrap();
        assert_eq!(back, value);
        assert_eq!(back["n"].to_string(), "-1.5e-300");
        // Binary is binary in MessagePack, not a map.
        let raw = rmpv::decode::read_value(&mut packed.as_slice()).unwrap();
        let bin = raw.as_map().unwrap().iter().find(|(k, _)| k.as_str() == Some("bin")).unwrap();
        assert_eq!(bin.1.as_slice(), Some(&[0u8, 1, 2, 255][..]));
    }

    #[test]
    fn what_json_cannot_say_prints_under_a_marker() {
        let mut packed = Vec::new();
        rmpv::encode::write_value(
            &mut packed,
            &rmpv::Value::Map(vec![
                (rmpv::Value::from(1), rmpv::Value::from("one")),
                (rmpv::Value::from("nan"), rmpv::Value::F64(f64::NAN)),
            ]),
        )
        .unwrap();
        let value = from_msgpack(&packed).unwrap();
        assert_eq!(value, json!({"$map": [[1, "one"], ["nan", {"$float": "NaN"}]]}));
        // A real map that looks like a marker stays a map.
        let mut looks_like_binary = Vec::new();
        rmpv::encode::write_value(
            &mut looks_like_binary,
            &rmpv::Value::Map(vec![(rmpv::Value::from("$base64"), rmpv::Value::from("aGk="))]),
        )
        .unwrap();
        assert_eq!(from_msgpack(&looks_like_binary).unwrap(), json!({"$map": [["$base64", "aGk="]]}));
        let mut ext = Vec::new();
        rmpv::encode::write_value(&mut ext, &rmpv::Value::Ext(5, vec![9, 9])).unwrap();
        assert_eq!(from_msgpack(&ext).unwrap(), json!({"$ext": 5, "$base64": "CQk="}));
    }
}
