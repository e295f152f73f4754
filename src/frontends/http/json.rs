//! Request bodies are JSON objects, and only objects.
//!
//! serde's derive builds a struct from a JSON array too, positionally (`["text", 3]` fills the
//! first two fields): a body or a nested field that the API documents as an object would then
//! accept what no client means to send, and the OpenAPI contract would not be the truth.
//! [`Object`] and the `deserialize_with` helpers here take a struct from a JSON object alone.

use std::marker::PhantomData;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// `T`, decoded from a JSON object only.
#[derive(Debug)]
pub struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        deserializer
            .deserialize_map(ObjectVisitor(PhantomData))
            .map(Object)
    }
}

/// For `#[serde(deserialize_with)]` on an `Option<T>` field: null, absent, or an object.
pub fn optional_object<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<Object<T>>::deserialize(deserializer).map(|o| o.map(|Object(t)| t))
}

/// For `#[serde(deserialize_with)]` on a `Vec<T>` field: an array of objects.
pub fn objects<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Vec::<Object<T>>::deserialize(deserializer)
        .map(|items| items.into_iter().map(|Object(t)| t).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Pair {
        a: Option<u32>,
        b: Option<u32>,
    }

    #[test]
    fn a_struct_comes_from_an_object_never_from_an_array() {
        let Object(pair) = serde_json::from_str::<Object<Pair>>(r#"{"a": 1}"#).expect("object");
        assert_eq!(
            pair,
            Pair {
                a: Some(1),
                b: None
            }
        );
        // What serde's derive alone accepts:
        assert!(serde_json::from_str::<Pair>("[null, null]").is_ok());
        let err = serde_json::from_str::<Object<Pair>>("[null, null]").expect_err("array");
        assert!(err.to_string().contains("expected a JSON object"), "{err}");
    }
}
