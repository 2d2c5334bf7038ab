//! Just enough of Kubernetes' protobuf encoding for what `kubectl create namespace` sends: kubectl encodes built-in
//! kinds as protobuf (`application/vnd.kubernetes.protobuf`: the `k8s\0` magic, then a `runtime.Unknown` wrapping
//! the object) and client-go does not fall back to JSON on 415. A Namespace body becomes its JSON form (name,
//! generateName, labels, annotations, spec.finalizers); any other protobuf body is refused with 415.

use serde_json::{Map, Value, json};

const MAGIC: &[u8] = b"k8s\0";

/// One field of a protobuf message: length-delimited values as bytes; varints and fixed-width values are skipped
/// (no field read here is numeric).
enum Field<'a> {
    Scalar,
    Bytes(&'a [u8]),
}

fn varint(data: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *data.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn fields(data: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let tag = varint(data, &mut at)?;
        let field = match tag & 7 {
            0 => {
                varint(data, &mut at)?;
                Field::Scalar
            }
            1 => {
                data.get(at..at + 8)?;
                at += 8;
                Field::Scalar
            }
            2 => {
                let len = usize::try_from(varint(data, &mut at)?).ok()?;
                let bytes = data.get(at..at.checked_add(len)?)?;
                at += len;
                Field::Bytes(bytes)
            }
            5 => {
                data.get(at..at + 4)?;
                at += 4;
                Field::Scalar
            }
            _ => return None,
        };
        out.push((tag >> 3, field));
    }
    Some(out)
}

fn text(bytes: &[u8]) -> Option<String> {
    String::from_utf8(bytes.to_vec()).ok()
}

/// A `map<string, string>` entry.
fn entry(bytes: &[u8]) -> Option<(String, String)> {
    let (mut key, mut value) = (String::new(), String::new());
    for (number, field) in fields(bytes)? {
        match (number, field) {
            (1, Field::Bytes(b)) => key = text(b)?,
            (2, Field::Bytes(b)) => value = text(b)?,
            _ => {}
        }
    }
    Some((key, value))
}

fn object_meta(bytes: &[u8]) -> Option<Value> {
    let mut meta = Map::new();
    let (mut labels, mut annotations) = (Map::new(), Map::new());
    for (number, field) in fields(bytes)? {
        let Field::Bytes(b) = field else { continue };
        match number {
            1 => drop(meta.insert("name".into(), json!(text(b)?))),
            2 => drop(meta.insert("generateName".into(), json!(text(b)?))),
            3 => drop(meta.insert("namespace".into(), json!(text(b)?))),
            11 => {
                let (k, v) = entry(b)?;
                labels.insert(k, json!(v));
            }
            12 => {
                let (k, v) = entry(b)?;
                annotations.insert(k, json!(v));
            }
            _ => {}
        }
    }
    if !labels.is_empty() {
        meta.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        meta.insert("annotations".into(), Value::Object(annotations));
    }
    Some(Value::Object(meta))
}

/// The JSON form of a protobuf-encoded Namespace; `None` for anything else or a malformed body.
pub fn decode(body: &[u8]) -> Option<Value> {
    let unknown = fields(body.strip_prefix(MAGIC)?)?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), None);
    for (number, field) in unknown {
        match (number, field) {
            (1, Field::Bytes(type_meta)) => {
                for (n, f) in fields(type_meta)? {
                    match (n, f) {
                        (1, Field::Bytes(b)) => api_version = text(b)?,
                        (2, Field::Bytes(b)) => kind = text(b)?,
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(b)) => raw = Some(b),
            _ => {}
        }
    }
    if api_version != "v1" || kind != "Namespace" {
        return None;
    }
    let mut namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {}});
    for (number, field) in fields(raw?)? {
        match (number, field) {
            (1, Field::Bytes(b)) => namespace["metadata"] = object_meta(b)?,
            (2, Field::Bytes(spec)) => {
                let finalizers: Vec<Value> = fields(spec)?
                    .into_iter()
                    .filter_map(|(n, f)| match (n, f) {
                        (1, Field::Bytes(b)) => text(b).map(Value::from),
                        _ => None,
                    })
                    .collect();
                if !finalizers.is_empty() {
                    namespace["spec"] = json!({ "finalizers": finalizers });
                }
            }
            _ => {}
        }
    }
    Some(namespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(fields: &[(u64, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (number, bytes) in fields {
            out.push(u8::try_from((number << 3) | 2).expect("small field"));
            out.push(u8::try_from(bytes.len()).expect("short"));
            out.extend_from_slice(bytes);
        }
        out
    }

    #[test]
    fn a_protobuf_namespace_with_a_label_decodes_and_other_kinds_do_not() {
        let label = message(&[(1, b"team"), (2, b"platform")]);
        let meta = message(&[(1, b"x"), (11, &label)]);
        let namespace = message(&[(1, &meta)]);
        let type_meta = message(&[(1, b"v1"), (2, b"Namespace")]);
        let mut body = MAGIC.to_vec();
        body.extend(message(&[(1, &type_meta), (2, &namespace)]));
        assert_eq!(
            decode(&body),
            Some(json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": "x", "labels": {"team": "platform"}}}))
        );
        let other = message(&[(1, b"v1"), (2, b"Secret")]);
        let mut secret = MAGIC.to_vec();
        secret.extend(message(&[(1, &other), (2, &namespace)]));
        assert_eq!(decode(&secret), None);
        assert_eq!(decode(b"not protobuf"), None);
    }
}
