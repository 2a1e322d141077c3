//! Size bounds on every string, list and map of the MeteorApp schema; never a rule of its own.
//!
//! Before it accepts a CRD, the API server prices each CEL rule by the largest value the rule
//! could be handed. A string without `maxLength`, a list without `maxItems` or a map without
//! `maxProperties` counts as large as a whole request (3 MiB), so one rule over such a node can
//! exceed the budget and the whole CRD is refused. Bounding every node keeps the estimate of every
//! rule, today's and the next one, far below the limit.
//!
//! Fields of our own that need a particular bound carry it beside their declaration
//! (`#[schemars(length(max = N))]`). This pass gives every node still unbounded afterwards (mostly
//! the Kubernetes types embedded in the spec: `EnvVar`, `Toleration`, `Affinity`, resources) the
//! bound in [`bound_for`], and leaves every bound already set as it is.

use serde_json::{Map, Value};

/// Strings: names, keys, enum-like words, label values, image references, probes' paths.
pub const STRING: u64 = 1024;
/// Environment variable values (and, sharing the name, toleration and sysctl values).
pub const VALUE: u64 = 32 * 1024;
/// Annotation values (the API server allows 256 KiB for all of an object's annotations).
pub const ANNOTATION_VALUE: u64 = 4096;
/// Condition messages, as `metav1.Condition` bounds them.
pub const MESSAGE: u64 = 32 * 1024;
/// Integers-or-strings: quantities (`500m`, `1Gi`) and percentages (`25%`).
pub const INT_OR_STRING: u64 = 64;
/// Timestamps (RFC 3339).
pub const TIMESTAMP: u64 = 64;
/// Lists: tolerations, label selector terms and their values, volume claims, conditions.
pub const LIST: u64 = 64;
/// Maps: node selectors, labels, resource names.
pub const MAP: u64 = 64;
/// Annotation maps.
pub const ANNOTATIONS: u64 = 128;

/// Which bound a node lacks, and the one it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    MaxLength(u64),
    MaxItems(u64),
    MaxProperties(u64),
}

impl Bound {
    /// The schema keyword that carries this bound.
    pub fn keyword(self) -> &'static str {
        match self {
            Bound::MaxLength(_) => "maxLength",
            Bound::MaxItems(_) => "maxItems",
            Bound::MaxProperties(_) => "maxProperties",
        }
    }

    fn value(self) -> u64 {
        match self {
            Bound::MaxLength(n) | Bound::MaxItems(n) | Bound::MaxProperties(n) => n,
        }
    }
}

/// The bound a node of this shape needs, `None` for nodes that need none (numbers, booleans,
/// objects with fixed properties). `field` is the property the node is the value of; for map
/// values and list items, that of the map or list.
pub fn bound_for(node: &Map<String, Value>, field: &str, in_map: bool) -> Option<Bound> {
    if node.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        return Some(Bound::MaxLength(INT_OR_STRING));
    }
    match node.get("type").and_then(Value::as_str)? {
        "string" => Some(Bound::MaxLength(
            if node.get("format").and_then(Value::as_str) == Some("date-time") {
                TIMESTAMP
            } else if in_map && field.ends_with("nnotations") {
                ANNOTATION_VALUE
            } else if !in_map && field == "value" {
                VALUE
            } else if !in_map && field == "message" {
                MESSAGE
            } else {
                STRING
            },
        )),
        "array" => Some(Bound::MaxItems(LIST)),
        "object" if node.contains_key("additionalProperties") => {
            Some(Bound::MaxProperties(if field.ends_with("nnotations") {
                ANNOTATIONS
            } else {
                MAP
            }))
        }
        _ => None,
    }
}

/// Gives every node of `schema` (an `openAPIV3Schema`) that lacks its bound the one
/// [`bound_for`] names.
pub fn apply(schema: &mut Value) {
    visit_paths(
        schema,
        String::new(),
        "",
        false,
        &mut |node, _, field, in_map| {
            if let Some(bound) = bound_for(node, field, in_map) {
                node.entry(bound.keyword())
                    .or_insert_with(|| bound.value().into());
            }
        },
    );
}

/// The nodes of `schema` that lack their bound, as paths (`.spec.env[].value`).
pub fn unbounded(schema: &Value) -> Vec<String> {
    let mut schema = schema.clone();
    let mut missing = Vec::new();
    visit_paths(
        &mut schema,
        String::new(),
        "",
        false,
        &mut |node, path, field, in_map| {
            if let Some(bound) = bound_for(node, field, in_map)
                && !node.contains_key(bound.keyword())
            {
                missing.push(format!("{path} ({})", bound.keyword()));
            }
        },
    );
    missing
}

/// Calls `each` on every schema node: properties, list items and map values, depth first.
fn visit_paths(
    schema: &mut Value,
    path: String,
    field: &str,
    in_map: bool,
    each: &mut impl FnMut(&mut Map<String, Value>, &str, &str, bool),
) {
    let Some(node) = schema.as_object_mut() else {
        return;
    };
    each(node, &path, field, in_map);
    if let Some(Value::Object(properties)) = node.get_mut("properties") {
        for (name, child) in properties.iter_mut() {
            visit_paths(child, format!("{path}.{name}"), name, false, each);
        }
    }
    if let Some(items) = node.get_mut("items") {
        visit_paths(items, format!("{path}[]"), field, false, each);
    }
    if let Some(values) = node.get_mut("additionalProperties") {
        visit_paths(values, format!("{path}{{}}"), field, true, each);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_unbounded_node_gets_a_bound_and_set_bounds_stay() {
        let mut schema = json!({"type": "object", "properties": {
            "image": {"type": "string"},
            "rootUrl": {"type": "string", "maxLength": 2048},
            "env": {"type": "array", "maxItems": 256, "items": {"type": "object", "properties": {
                "name": {"type": "string"}, "value": {"type": "string"}}}},
            "podAnnotations": {"type": "object", "additionalProperties": {"type": "string"}},
            "nodeSelector": {"type": "object", "additionalProperties": {"type": "string"}},
            "maxSurge": {"x-kubernetes-int-or-string": true},
            "since": {"type": "string", "format": "date-time"},
            "replicas": {"type": "integer"},
        }});
        assert_eq!(unbounded(&schema).len(), 9, "{:?}", unbounded(&schema));
        apply(&mut schema);
        assert_eq!(unbounded(&schema), Vec::<String>::new());
        let p = &schema["properties"];
        assert_eq!(p["image"]["maxLength"], STRING);
        assert_eq!(p["rootUrl"]["maxLength"], 2048);
        assert_eq!(p["env"]["maxItems"], 256);
        assert_eq!(p["env"]["items"]["properties"]["name"]["maxLength"], STRING);
        assert_eq!(p["env"]["items"]["properties"]["value"]["maxLength"], VALUE);
        assert_eq!(p["podAnnotations"]["maxProperties"], ANNOTATIONS);
        assert_eq!(
            p["podAnnotations"]["additionalProperties"]["maxLength"],
            ANNOTATION_VALUE
        );
        assert_eq!(p["nodeSelector"]["maxProperties"], MAP);
        assert_eq!(
            p["nodeSelector"]["additionalProperties"]["maxLength"],
            STRING
        );
        assert_eq!(p["maxSurge"]["maxLength"], INT_OR_STRING);
        assert_eq!(p["since"]["maxLength"], TIMESTAMP);
        assert!(p["replicas"].get("maxLength").is_none());
    }
}
