//! Numbers and booleans as YAML types them: `retries: 2` is a number,
//! `retries: "2"` is a string and is refused with the hint
//! `write 2 without quotes`, as the manifest refuses it (issue 13). One
//! rule for both files: a quoted number is a string.
//!
//! serde-saphyr reads a quoted `"2"` into a `u32` field without a word, so
//! these fields go through `deserialize_any`, which tells a plain scalar
//! (`visit_u64`) from a quoted one (`visit_str`).
//!
//! Owns the `deserialize_with` functions of `raw`'s numeric and boolean
//! fields and the wording of their errors. Must not check ranges beyond the
//! field's type (that is `check`'s).

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde_saphyr::Spanned;

use super::raw::Pairs;

/// What separates the message of a quoted value's error from its hint, so
/// `raw::yaml_error` can put the hint where every hint goes.
const HINT_SEPARATOR: &str = "; hint: ";

/// A value read only from a plain (unquoted) YAML scalar of its type.
struct Strict<T>(T);

/// The integer types the workflow's fields use.
trait WholeNumber: Sized + TryFrom<u64> + TryFrom<i64> {
    const MIN: i64;
    const MAX: u64;
}

impl WholeNumber for u32 {
    const MIN: i64 = 0;
    const MAX: u64 = u32::MAX as u64;
}

impl WholeNumber for u64 {
    const MIN: i64 = 0;
    const MAX: u64 = u64::MAX;
}

impl WholeNumber for i32 {
    const MIN: i64 = i32::MIN as i64;
    const MAX: u64 = i32::MAX as u64;
}

fn range_message<T: WholeNumber>() -> String {
    format!("expected a whole number from {} to {}", T::MIN, T::MAX)
}

impl<'de, T: WholeNumber> Deserialize<'de> for Strict<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: WholeNumber> Visitor<'de> for V<T> {
            type Value = Strict<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a whole number")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Strict<T>, E> {
                T::try_from(v)
                    .map(Strict)
                    .map_err(|_| E::custom(range_message::<T>()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Strict<T>, E> {
                T::try_from(v)
                    .map(Strict)
                    .map_err(|_| E::custom(range_message::<T>()))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Strict<T>, E> {
                Err(E::custom(range_message::<T>()))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Strict<T>, E> {
                Err(E::custom(range_message::<T>()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Strict<T>, E> {
                Err(E::custom(match v.trim().parse::<i64>() {
                    Ok(n) => quoted("a whole number", v, &n.to_string()),
                    Err(_) => range_message::<T>(),
                }))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

impl<'de> Deserialize<'de> for Strict<bool> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Strict<bool>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("true or false")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Strict<bool>, E> {
                Ok(Strict(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Strict<bool>, E> {
                Err(E::custom(match v.trim() {
                    b @ ("true" | "false") => quoted("true or false", v, b),
                    _ => "expected true or false".to_string(),
                }))
            }
        }
        d.deserialize_any(V)
    }
}

/// The error of a value written in quotes: what was expected, then the hint.
fn quoted(expected: &str, text: &str, plain: &str) -> String {
    format!(
        "expected {expected}, got the string {text:?}{HINT_SEPARATOR}write {plain} without quotes"
    )
}

/// A message from this module split into what is wrong and its hint.
pub(super) fn split_hint(message: &str) -> (String, Option<String>) {
    match message.split_once(HINT_SEPARATOR) {
        Some((what, hint)) => (what.to_string(), Some(hint.to_string())),
        None => (message.to_string(), None),
    }
}

fn spanned<T>(s: Spanned<Strict<T>>) -> Spanned<T> {
    Spanned::new(s.value.0, s.referenced, s.defined)
}

pub(super) fn opt_spanned_u32<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Spanned<u32>>, D::Error> {
    Ok(Option::<Spanned<Strict<u32>>>::deserialize(d)?.map(spanned))
}

pub(super) fn opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    Ok(Option::<Strict<u32>>::deserialize(d)?.map(|s| s.0))
}

pub(super) fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(Option::<Strict<u64>>::deserialize(d)?.map(|s| s.0))
}

pub(super) fn opt_i32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i32>, D::Error> {
    Ok(Option::<Strict<i32>>::deserialize(d)?.map(|s| s.0))
}

pub(super) fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(Option::<Strict<bool>>::deserialize(d)?.map(|s| s.0))
}

pub(super) fn opt_pairs_u64<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Pairs<u64>>, D::Error> {
    Ok(Option::<Pairs<Strict<u64>>>::deserialize(d)?
        .map(|p| Pairs(p.0.into_iter().map(|(k, v)| (k, v.0)).collect())))
}
