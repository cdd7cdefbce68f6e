//! Machine-readable events: one JSON object per line on stdout, each with `"event"` (its
//! name) and `"ts"` (milliseconds since the Unix epoch). Human logs go to stderr (tracing),
//! so stdout stays parseable line by line.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use gst::glib;
use gst::prelude::*;
use serde_json::{Map, Value};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Prints one event line: `{"event": name, "ts": …, …fields}`. Fields named `event` or `ts`
/// are ignored (the line's own win). The line is flushed at once, so a reader sees events
/// as they happen.
pub fn emit(name: &str, fields: Map<String, Value>) {
    let mut line = Map::new();
    line.insert("event".into(), Value::from(name));
    line.insert("ts".into(), Value::from(now_ms()));
    for (key, value) in fields {
        if key != "event" && key != "ts" {
            line.insert(key, value);
        }
    }
    let text = Value::Object(line).to_string();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    // A closed stdout (reader gone) must not take the endpoint down.
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

/// Builds a field map from `(key, value)` pairs.
pub fn fields<const N: usize>(pairs: [(&str, Value); N]) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// The event name of a wilddog element message: `wilddog-first-frame` → `first_frame`.
/// `None` for messages that are not the wilddog elements'.
pub fn event_name(message_name: &str) -> Option<String> {
    message_name.strip_prefix("wilddog-").map(|rest| rest.replace('-', "_"))
}

/// The fields of a GStreamer structure as JSON: names with `-` become `_`, numbers stay
/// numbers, strings strings, enums their nick, nested structures objects, lists arrays,
/// anything else its text form.
pub fn structure_fields(structure: &gst::StructureRef) -> Map<String, Value> {
    structure.iter().map(|(name, value)| (name.replace('-', "_"), value_to_json(value))).collect()
}

fn value_to_json(value: &glib::Value) -> Value {
    use glib::Type;
    let ty = value.type_();
    macro_rules! num {
        ($t:ty) => {
            if let Ok(v) = value.get::<$t>() {
                return Value::from(v);
            }
        };
    }
    match ty {
        t if t == Type::BOOL => num!(bool),
        t if t == Type::I32 => num!(i32),
        t if t == Type::U32 => num!(u32),
        t if t == Type::I64 => num!(i64),
        t if t == Type::U64 => num!(u64),
        t if t == Type::I_LONG => num!(i64),
        t if t == Type::U_LONG => num!(u64),
        t if t == Type::F32 => num!(f32),
        t if t == Type::F64 => {
            if let Ok(v) = value.get::<f64>() {
                return serde_json::Number::from_f64(v).map(Value::Number).unwrap_or(Value::Null);
            }
        }
        t if t == Type::STRING => {
            return match value.get::<Option<String>>() {
                Ok(Some(s)) => Value::from(s),
                _ => Value::Null,
            };
        }
        _ => {}
    }
    if ty == gst::Structure::static_type()
        && let Ok(s) = value.get::<gst::Structure>()
    {
        return Value::Object(structure_fields(&s));
    }
    if ty == gst::List::static_type()
        && let Ok(list) = value.get::<gst::List>()
    {
        return Value::Array(list.iter().map(|v| value_to_json(v)).collect());
    }
    if ty == gst::Array::static_type()
        && let Ok(array) = value.get::<gst::Array>()
    {
        return Value::Array(array.iter().map(|v| value_to_json(v)).collect());
    }
    if ty.is_a(Type::ENUM)
        && let Some((_, enum_value)) = glib::EnumValue::from_value(value)
    {
        return Value::from(enum_value.nick());
    }
    if ty.is_a(Type::FLAGS)
        && let Some((_, flags)) = glib::FlagsValue::from_value(value)
    {
        return Value::Array(flags.iter().map(|f| Value::from(f.nick())).collect());
    }
    match value.serialize() {
        Ok(s) => Value::from(s.as_str()),
        Err(_) => Value::from(format!("{value:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_become_event_names() {
        assert_eq!(event_name("wilddog-first-frame").as_deref(), Some("first_frame"));
        assert_eq!(event_name("wilddog-called").as_deref(), Some("called"));
        assert_eq!(event_name("GstMessageQOS"), None);
    }

    #[test]
    fn structures_become_json_objects() {
        gst::init().unwrap();
        let s = gst::Structure::builder("wilddog-first-frame")
            .field("width", 640i32)
            .field("height", 480u32)
            .field("elapsed-ms", 123u64)
            .field("remote-uid", "bob")
            .field("ratio", 0.5f64)
            .field("inner", gst::Structure::builder("x").field("fps", 15i32).build())
            .build();
        let json = Value::Object(structure_fields(&s));
        assert_eq!(
            json,
            serde_json::json!({
                "width": 640, "height": 480, "elapsed_ms": 123, "remote_uid": "bob",
                "ratio": 0.5, "inner": {"fps": 15}
            })
        );
    }
}
