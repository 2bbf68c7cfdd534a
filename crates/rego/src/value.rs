//! Any `Serialize` value straight into a `regorus::Value`, with no JSON in between: the input
//! document's `review` is built from the parsed AdmissionRequest this way once per review.
//!
//! The result is exactly what `regorus::Value::from(serde_json::to_value(x)?)` gives (the
//! route it replaces): the same data model choices as `serde_json::to_value` (`None` and unit
//! as `null`, enums externally tagged, bytes as arrays of numbers, non-finite floats as
//! `null`, integer and boolean map keys as strings, 128-bit integers only within 64 bits), and
//! the same regorus values regorus' own deserializer builds. Tests compare both routes.

use std::collections::BTreeMap;
use std::fmt::Display;

use regorus::Value;
use serde::ser::{self, Serialize};

/// A value that `serde_json::to_value` would refuse too (a map key that is not a string, an
/// integer beyond 64 bits, or an error of the value's own `Serialize`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(String);

impl ser::Error for ValueError {
    fn custom<T: Display>(msg: T) -> Self {
        Self(msg.to_string())
    }
}

/// `value` as a regorus value.
pub fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<Value, ValueError> {
    value.serialize(ValueSerializer)
}

/// serde_json's name for an arbitrary-precision number (with its `arbitrary_precision`
/// feature); regorus reads it as a number, so this does too.
const JSON_NUMBER_TOKEN: &str = "$serde_json::private::Number";

fn object(map: BTreeMap<Value, Value>) -> Value {
    if map.is_empty() {
        Value::new_object()
    } else {
        Value::from(map)
    }
}

fn tagged(variant: &str, value: Value) -> Value {
    object(BTreeMap::from([(Value::from(variant), value)]))
}

struct ValueSerializer;

impl ser::Serializer for ValueSerializer {
    type Ok = Value;
    type Error = ValueError;
    type SerializeSeq = SeqBuilder;
    type SerializeTuple = SeqBuilder;
    type SerializeTupleStruct = SeqBuilder;
    type SerializeTupleVariant = VariantSeqBuilder;
    type SerializeMap = MapBuilder;
    type SerializeStruct = StructBuilder;
    type SerializeStructVariant = VariantMapBuilder;

    fn serialize_bool(self, v: bool) -> Result<Value, ValueError> {
        Ok(Value::Bool(v))
    }

    fn serialize_i8(self, v: i8) -> Result<Value, ValueError> {
        Ok(Value::from(i64::from(v)))
    }

    fn serialize_i16(self, v: i16) -> Result<Value, ValueError> {
        Ok(Value::from(i64::from(v)))
    }

    fn serialize_i32(self, v: i32) -> Result<Value, ValueError> {
        Ok(Value::from(i64::from(v)))
    }

    fn serialize_i64(self, v: i64) -> Result<Value, ValueError> {
        // serde_json keeps non-negative integers as u64, and regorus' number for 5i64 and
        // 5u64 is the same value either way.
        Ok(Value::from(v))
    }

    fn serialize_i128(self, v: i128) -> Result<Value, ValueError> {
        if let Ok(small) = i64::try_from(v) {
            Ok(Value::from(small))
        } else if let Ok(unsigned) = u64::try_from(v) {
            Ok(Value::from(unsigned))
        } else {
            Err(ValueError("number out of range".into()))
        }
    }

    fn serialize_u8(self, v: u8) -> Result<Value, ValueError> {
        Ok(Value::from(u64::from(v)))
    }

    fn serialize_u16(self, v: u16) -> Result<Value, ValueError> {
        Ok(Value::from(u64::from(v)))
    }

    fn serialize_u32(self, v: u32) -> Result<Value, ValueError> {
        Ok(Value::from(u64::from(v)))
    }

    fn serialize_u64(self, v: u64) -> Result<Value, ValueError> {
        Ok(Value::from(v))
    }

    fn serialize_u128(self, v: u128) -> Result<Value, ValueError> {
        u64::try_from(v)
            .map(Value::from)
            .map_err(|_| ValueError("number out of range".into()))
    }

    fn serialize_f32(self, v: f32) -> Result<Value, ValueError> {
        Ok(Value::from(f64::from(v)))
    }

    fn serialize_f64(self, v: f64) -> Result<Value, ValueError> {
        // Non-finite: null, as serde_json::to_value and regorus' From<f64> both do.
        Ok(Value::from(v))
    }

    fn serialize_char(self, v: char) -> Result<Value, ValueError> {
        Ok(Value::from(v.to_string()))
    }

    fn serialize_str(self, v: &str) -> Result<Value, ValueError> {
        Ok(Value::from(v))
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<Value, ValueError> {
        Ok(Value::from(
            v.iter()
                .map(|b| Value::from(u64::from(*b)))
                .collect::<Vec<_>>(),
        ))
    }

    fn serialize_none(self) -> Result<Value, ValueError> {
        Ok(Value::Null)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Value, ValueError> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<Value, ValueError> {
        Ok(Value::Null)
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<Value, ValueError> {
        Ok(Value::Null)
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Value, ValueError> {
        Ok(Value::from(variant))
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<Value, ValueError> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Value, ValueError> {
        Ok(tagged(variant, value.serialize(self)?))
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<SeqBuilder, ValueError> {
        Ok(SeqBuilder(Vec::with_capacity(len.unwrap_or(0))))
    }

    fn serialize_tuple(self, len: usize) -> Result<SeqBuilder, ValueError> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<SeqBuilder, ValueError> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<VariantSeqBuilder, ValueError> {
        Ok(VariantSeqBuilder {
            variant,
            items: Vec::with_capacity(len),
        })
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<MapBuilder, ValueError> {
        Ok(MapBuilder {
            map: BTreeMap::new(),
            key: None,
        })
    }

    fn serialize_struct(
        self,
        name: &'static str,
        _len: usize,
    ) -> Result<StructBuilder, ValueError> {
        Ok(if name == JSON_NUMBER_TOKEN {
            StructBuilder::Number(None)
        } else {
            StructBuilder::Map(BTreeMap::new())
        })
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<VariantMapBuilder, ValueError> {
        Ok(VariantMapBuilder {
            variant,
            map: BTreeMap::new(),
        })
    }
}

struct SeqBuilder(Vec<Value>);

impl ser::SerializeSeq for SeqBuilder {
    type Ok = Value;
    type Error = ValueError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ValueError> {
        self.0.push(to_value(value)?);
        Ok(())
    }

    fn end(self) -> Result<Value, ValueError> {
        Ok(Value::from(self.0))
    }
}

impl ser::SerializeTuple for SeqBuilder {
    type Ok = Value;
    type Error = ValueError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ValueError> {
        ser::SerializeSeq::serialize_element(self, value)
    }

    fn end(self) -> Result<Value, ValueError> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleStruct for SeqBuilder {
    type Ok = Value;
    type Error = ValueError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ValueError> {
        ser::SerializeSeq::serialize_element(self, value)
    }

    fn end(self) -> Result<Value, ValueError> {
        ser::SerializeSeq::end(self)
    }
}

struct VariantSeqBuilder {
    variant: &'static str,
    items: Vec<Value>,
}

impl ser::SerializeTupleVariant for VariantSeqBuilder {
    type Ok = Value;
    type Error = ValueError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ValueError> {
        self.items.push(to_value(value)?);
        Ok(())
    }

    fn end(self) -> Result<Value, ValueError> {
        Ok(tagged(self.variant, Value::from(self.items)))
    }
}

struct MapBuilder {
    map: BTreeMap<Value, Value>,
    key: Option<Value>,
}

impl ser::SerializeMap for MapBuilder {
    type Ok = Value;
    type Error = ValueError;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), ValueError> {
        self.key = Some(key.serialize(KeySerializer)?);
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ValueError> {
        let key = self
            .key
            .take()
            .ok_or_else(|| ValueError("a map value came without its key".into()))?;
        // A repeated key (possible through `#[serde(flatten)]`): the last one wins, as in
        // serde_json's map.
        self.map.insert(key, to_value(value)?);
        Ok(())
    }

    fn end(self) -> Result<Value, ValueError> {
        Ok(object(self.map))
    }
}

enum StructBuilder {
    Map(BTreeMap<Value, Value>),
    /// serde_json's arbitrary-precision number: its one field is the number's text.
    Number(Option<Value>),
}

impl ser::SerializeStruct for StructBuilder {
    type Ok = Value;
    type Error = ValueError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), ValueError> {
        match self {
            StructBuilder::Map(map) => {
                map.insert(Value::from(key), to_value(value)?);
            }
            StructBuilder::Number(number) => {
                let text = to_value(value)?;
                let text = text
                    .as_string()
                    .map_err(|_| ValueError("a JSON number that is not text".into()))?;
                *number = Some(
                    Value::from_numeric_string(text).map_err(|err| ValueError(err.to_string()))?,
                );
            }
        }
        Ok(())
    }

    fn end(self) -> Result<Value, ValueError> {
        match self {
            StructBuilder::Map(map) => Ok(object(map)),
            StructBuilder::Number(number) => {
                number.ok_or_else(|| ValueError("a JSON number without its digits".into()))
            }
        }
    }
}

struct VariantMapBuilder {
    variant: &'static str,
    map: BTreeMap<Value, Value>,
}

impl ser::SerializeStructVariant for VariantMapBuilder {
    type Ok = Value;
    type Error = ValueError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), ValueError> {
        self.map.insert(Value::from(key), to_value(value)?);
        Ok(())
    }

    fn end(self) -> Result<Value, ValueError> {
        Ok(tagged(self.variant, object(self.map)))
    }
}

/// Map keys: strings, and what serde_json turns into strings (integers, booleans, chars,
/// unit variants).
struct KeySerializer;

fn key_error() -> ValueError {
    ValueError("key must be a string".into())
}

impl ser::Serializer for KeySerializer {
    type Ok = Value;
    type Error = ValueError;
    type SerializeSeq = ser::Impossible<Value, ValueError>;
    type SerializeTuple = ser::Impossible<Value, ValueError>;
    type SerializeTupleStruct = ser::Impossible<Value, ValueError>;
    type SerializeTupleVariant = ser::Impossible<Value, ValueError>;
    type SerializeMap = ser::Impossible<Value, ValueError>;
    type SerializeStruct = ser::Impossible<Value, ValueError>;
    type SerializeStructVariant = ser::Impossible<Value, ValueError>;

    fn serialize_bool(self, v: bool) -> Result<Value, ValueError> {
        Ok(Value::from(v.to_string()))
    }
    fn serialize_i8(self, v: i8) -> Result<Value, ValueError> {
        Ok(Value::from(v.to_string()))
    }
    fn serialize_i16(self, v: i16) -> Result<Value, ValueError> {
        Ok(Value::from(v.to_string()))
    }
    fn serialize_i32(self, v: i32) -> Result<Value, ValueError> {
        Ok(Value::from(v.to_string()))
    }
    fn serialize_i64(self, v: i64) -> Result<Value, ValueError> {
        Ok(Value::from(v.to_string()))
    }
    fn serialize_i128(self, v: i128) -> Result<Value, ValueError> {
        Ok(Value::from(v.to_string()))
    }
    fn serialize_u8(self, v: u8) -> Result<Value, ValueError> {
        Ok(Value::from(v.to_string()))
    }
    fn serialize_u16(self, v: u16) -> Result<Value, ValueError> {
        Ok(Value::from(v.to_string()))
    }
    fn serialize_u32(self, v: u32) -> Result<Value, ValueError> {
        Ok(Value::from(v.to_string()))
    }
    fn serialize_u64(self, v: u64) -> Result<Value, ValueError> {
        Ok(Value::from(v.to_string()))
    }
    fn serialize_u128(self, v: u128) -> Result<Value, ValueError> {
        Ok(Value::from(v.to_string()))
    }
    fn serialize_f32(self, _v: f32) -> Result<Value, ValueError> {
        Err(key_error())
    }
    fn serialize_f64(self, _v: f64) -> Result<Value, ValueError> {
        Err(key_error())
    }
    fn serialize_char(self, v: char) -> Result<Value, ValueError> {
        Ok(Value::from(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Result<Value, ValueError> {
        Ok(Value::from(v))
    }
    fn serialize_bytes(self, _v: &[u8]) -> Result<Value, ValueError> {
        Err(key_error())
    }
    fn serialize_none(self) -> Result<Value, ValueError> {
        Err(key_error())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _value: &T) -> Result<Value, ValueError> {
        Err(key_error())
    }
    fn serialize_unit(self) -> Result<Value, ValueError> {
        Err(key_error())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<Value, ValueError> {
        Err(key_error())
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Value, ValueError> {
        Ok(Value::from(variant))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<Value, ValueError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<Value, ValueError> {
        Err(key_error())
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, ValueError> {
        Err(key_error())
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, ValueError> {
        Err(key_error())
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, ValueError> {
        Err(key_error())
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, ValueError> {
        Err(key_error())
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, ValueError> {
        Err(key_error())
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, ValueError> {
        Err(key_error())
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, ValueError> {
        Err(key_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The route this module replaces.
    fn through_json<T: Serialize>(value: &T) -> Value {
        Value::from(serde_json::to_value(value).unwrap())
    }

    #[derive(serde::Serialize)]
    enum Shape {
        Unit,
        New(u8),
        Tuple(i32, String),
        Struct { a: Option<bool>, b: Vec<u8> },
    }

    #[derive(serde::Serialize)]
    struct Everything {
        text: String,
        negative: i64,
        big: u64,
        wide: u128,
        float: f64,
        integral_float: f64,
        nan: f64,
        nothing: Option<String>,
        unit: (),
        shapes: Vec<Shape>,
        by_number: BTreeMap<u32, &'static str>,
        by_bool: BTreeMap<bool, u8>,
        #[serde(flatten)]
        rest: serde_json::Value,
        empty: BTreeMap<String, u8>,
        character: char,
    }

    #[test]
    fn a_value_is_the_same_as_through_json() {
        let value = Everything {
            text: "héllo".into(),
            negative: -42,
            big: u64::MAX,
            wide: 7,
            float: 1.5,
            integral_float: 3.0,
            nan: f64::NAN,
            nothing: None,
            unit: (),
            shapes: vec![
                Shape::Unit,
                Shape::New(9),
                Shape::Tuple(-1, "x".into()),
                Shape::Struct {
                    a: Some(true),
                    b: vec![1, 2],
                },
            ],
            by_number: BTreeMap::from([(10, "ten"), (2, "two")]),
            by_bool: BTreeMap::from([(true, 1)]),
            rest: json!({"metadata": {"labels": {"a": "b"}}, "spec": [null, 1e300, {"x": []}]}),
            empty: BTreeMap::new(),
            character: 'c',
        };
        let direct = to_value(&value).unwrap();
        assert_eq!(direct, through_json(&value));
        // Byte-identical as JSON too (what policies and the audit log see).
        assert_eq!(
            serde_json::to_string(&direct).unwrap(),
            serde_json::to_string(&through_json(&value)).unwrap()
        );
    }

    #[test]
    fn what_serde_json_refuses_is_refused() {
        assert!(to_value(&u128::MAX).is_err());
        assert!(serde_json::to_value(u128::MAX).is_err());
        let float_keys = BTreeMap::from([(vec![1u8], 1u8)]);
        assert!(to_value(&float_keys).is_err());
        assert!(serde_json::to_value(&float_keys).is_err());
    }
}
