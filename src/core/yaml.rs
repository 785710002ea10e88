//! Source-mapped YAML: parse a multi-document YAML stream into JSON values and
//! remember the line where every node starts.
//!
//! Why not `serde_yaml` alone: serde_yaml drops positions once a document is a
//! `Value`, yet every diagnostic canopy prints must name the file, the line and
//! the YAML path of the offending node — including errors found long after
//! parsing (an unknown parent, a selector operator, a patch that fails). So the
//! fleet's own documents are read through `yaml-rust2`'s marked event stream,
//! which yields both the value and a path → line index in one pass.
//! `serde_yaml` is still what canopy uses to *write* YAML.

use std::collections::HashMap;
use std::fmt;

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// The deepest nesting of mappings and sequences canopy reads, block and
/// flow style alike. It is below serde_json's recursion limit (128) with
/// room for what rendering and the state files add around an object, so
/// anything canopy accepts it can write and read back; real manifests (the
/// largest CRD schemas included) nest a few dozen levels.
pub const MAX_DEPTH: usize = 100;

/// The most nodes that YAML aliases may add to one file. Aliases copy the
/// node they name, so ten levels of `[*a, *a, …]` make a file of a few
/// hundred bytes expand to billions of nodes ("billion laughs"); the
/// Kubernetes API server's decoder bounds the same thing. Manifests rarely
/// use aliases at all.
pub const MAX_ALIAS_NODES: usize = 100_000;

/// How deeply `v`'s mappings and sequences nest (a scalar is 0), without
/// recursion: the value may come from anywhere.
pub fn depth(v: &Value) -> usize {
    let mut deepest = 0;
    let mut todo = vec![(v, 0)];
    while let Some((v, d)) = todo.pop() {
        match v {
            Value::Object(m) => todo.extend(m.values().map(|c| (c, d + 1))),
            Value::Array(a) => todo.extend(a.iter().map(|c| (c, d + 1))),
            _ => continue,
        }
        deepest = deepest.max(d + 1);
    }
    deepest
}

/// One segment of a path into a YAML document.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A path into a YAML document, printed the way users read it:
/// `spec.placement.clusters.selector.matchExpressions[0].operator`, with keys
/// that are not plain identifiers quoted: `metadata.labels["example.com/tier"]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct YamlPath(pub Vec<Seg>);

impl YamlPath {
    pub fn root() -> Self {
        YamlPath(Vec::new())
    }

    /// Builds a path from dotted text with `[n]` indexes; used by code that
    /// names fixed paths such as `spec.parent`.
    pub fn parse(dotted: &str) -> Self {
        let mut segs = Vec::new();
        for part in dotted.split('.').filter(|p| !p.is_empty()) {
            let (key, rest) = match part.find('[') {
                Some(i) => (&part[..i], &part[i..]),
                None => (part, ""),
            };
            if !key.is_empty() {
                segs.push(Seg::Key(key.to_string()));
            }
            for idx in rest.split('[').filter(|s| !s.is_empty()) {
                if let Ok(n) = idx.trim_end_matches(']').parse() {
                    segs.push(Seg::Index(n));
                }
            }
        }
        YamlPath(segs)
    }

    pub fn key(&self, k: impl Into<String>) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Key(k.into()));
        p
    }

    pub fn index(&self, i: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }

    /// Converts the path `serde_path_to_error` reports for a failed
    /// deserialization, so that type errors point at the right line too.
    pub fn from_serde(path: &serde_path_to_error::Path) -> Self {
        use serde_path_to_error::Segment;
        let segs = path
            .iter()
            .filter_map(|s| match s {
                Segment::Seq { index } => Some(Seg::Index(*index)),
                Segment::Map { key } => Some(Seg::Key(key.clone())),
                Segment::Enum { variant } => Some(Seg::Key(variant.clone())),
                Segment::Unknown => None,
            })
            .collect();
        YamlPath(segs)
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

fn is_plain_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl fmt::Display for YamlPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(document)");
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if is_plain_key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Seg::Key(k) => write!(f, "[{k:?}]")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// One YAML document with its position in the file.
#[derive(Debug, Clone)]
pub struct Doc {
    /// 1-based line of the document's first node.
    pub line: usize,
    pub value: Value,
    /// Line of every node, by path (empty when parsed without an index).
    pub lines: HashMap<YamlPath, usize>,
}

impl Doc {
    /// Line of the node at `path`, or of its nearest indexed ancestor (a
    /// missing field is reported at the mapping that should hold it).
    pub fn line_of(&self, path: &YamlPath) -> usize {
        let mut p = path.clone();
        loop {
            if let Some(l) = self.lines.get(&p) {
                return *l;
            }
            if p.0.pop().is_none() {
                return self.line;
            }
        }
    }
}

/// A YAML syntax error with its 1-based position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {col}: {message}")]
pub struct SyntaxError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// How unquoted scalars are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Schema {
    /// Kubernetes manifests: as the API server's YAML reader reads them
    /// (YAML 1.1 rules, [`plain_scalar`]).
    #[default]
    Kubernetes,
    /// canopy's own documents: YAML 1.2's core schema, as they have always
    /// been read (a cluster named `no` or `on` stays a name).
    Core,
}

/// Parses every document of a manifest file (Kubernetes' reading of
/// scalars). `index` asks for the path → line map; the render path skips it
/// because rendered manifests are parsed by the hundred thousand and only
/// need a line for syntax errors.
pub fn parse_stream(text: &str, index: bool) -> Result<Vec<Doc>, SyntaxError> {
    parse_with(text, index, Schema::Kubernetes)
}

/// Parses every document of `text`, its scalars read by `schema`.
pub fn parse_with(text: &str, index: bool, schema: Schema) -> Result<Vec<Doc>, SyntaxError> {
    if let Some(err) = nul_byte(text) {
        return Err(err);
    }
    let mut b = Builder {
        index,
        schema,
        ..Builder::default()
    };
    let mut parser = Parser::new_from_str(text);
    let loaded = parser.load(&mut b, true);
    // The first problem in the text wins: the builder stops taking events
    // at its own, while the scanner may read on to a later one.
    if let Some(err) = b.error.take() {
        return Err(err);
    }
    loaded.map_err(|e| SyntaxError {
        line: e.marker().line(),
        col: e.marker().col(),
        // The scanner's own bound on flow-style nesting, said as canopy's.
        message: if e.info() == "recursion limit exceeded" {
            format!("mappings and sequences nest deeper than {MAX_DEPTH} levels here (canopy's limit); flatten the structure")
        } else {
            e.info().to_string()
        },
    })?;
    Ok(b.docs)
}

/// A NUL byte, as a syntax error at its position. The YAML reader would
/// take it for the end of the text and silently drop every document after
/// it, so it is refused wherever YAML is read.
pub fn nul_byte(text: &str) -> Option<SyntaxError> {
    let at = text.find('\0')?;
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count());
    Some(SyntaxError {
        line,
        col,
        message: format!(
            "a NUL byte (at byte {at}) cannot be in YAML text; is this a binary file, or was it saved broken?"
        ),
    })
}

enum Frame {
    Map {
        map: Map<String, Value>,
        /// The key whose value comes next, with the key's line.
        pending_key: Option<(String, usize)>,
        anchor: usize,
        /// Nodes inside, itself included (what an alias to it would copy).
        nodes: usize,
    },
    Seq {
        items: Vec<Value>,
        anchor: usize,
        nodes: usize,
    },
}

/// A string scalar that holds template syntax, found while parsing a
/// manifest template as YAML (see `render`'s structural templating).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateSlot {
    /// Index of the document in the stream (counting every document).
    pub doc: usize,
    pub path: Vec<Seg>,
    pub style: ScalarStyle,
    /// The scalar's text: a template.
    pub source: String,
    /// 1-based line of the scalar in the file.
    pub line: usize,
}

/// How a scalar was written, which decides how its rendered text would have
/// been read back by text templating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalarStyle {
    Plain,
    SingleQuoted,
    DoubleQuoted,
    Block,
}

/// Whether text holds minijinja syntax.
pub fn has_template_syntax(s: &str) -> bool {
    s.contains("{{") || s.contains("{%") || s.contains("{#")
}

/// Parses a template file as YAML and lists its templated string scalars.
/// `None` if the file is not YAML as written, or if template syntax appears
/// anywhere but inside single-line scalar values (keys, comments, block
/// tags): then only text templating can render it.
pub fn parse_template_slots(text: &str) -> Option<(Vec<Doc>, Vec<TemplateSlot>)> {
    let mut b = Builder {
        slots: Some(Vec::new()),
        ..Builder::default()
    };
    if text.contains('\0') {
        return None;
    }
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut b, true).ok()?;
    if b.error.is_some() || b.template_in_key {
        return None;
    }
    let slots = b.slots.take().unwrap_or_default();
    let markers =
        |s: &str| s.matches("{{").count() + s.matches("{%").count() + s.matches("{#").count();
    let in_slots: usize = slots.iter().map(|s| markers(&s.source)).sum();
    let verbatim = slots
        .iter()
        .all(|s| !s.source.contains('\n') && text.contains(s.source.as_str()));
    (in_slots == markers(text) && verbatim).then_some((b.docs, slots))
}

#[derive(Default)]
struct Builder {
    index: bool,
    schema: Schema,
    /// Collects templated scalars when set.
    slots: Option<Vec<TemplateSlot>>,
    template_in_key: bool,
    docs: Vec<Doc>,
    stack: Vec<Frame>,
    path: Vec<Seg>,
    /// Each anchored node, with its node count.
    anchors: HashMap<usize, (Value, usize)>,
    /// Nodes added by aliases so far in this text.
    aliased: usize,
    lines: HashMap<YamlPath, usize>,
    doc_line: usize,
    error: Option<SyntaxError>,
}

impl Builder {
    fn fail(&mut self, mark: Marker, message: String) {
        if self.error.is_none() {
            self.error = Some(SyntaxError {
                line: mark.line(),
                col: mark.col(),
                message,
            });
        }
    }

    /// The path of the node about to be produced, and whether it is a map key.
    fn next_is_key(&self) -> bool {
        matches!(
            self.stack.last(),
            Some(Frame::Map {
                pending_key: None,
                ..
            })
        )
    }

    /// Records the node about to be produced. A mapping value is reported at
    /// its key's line (where a reader looks for `parent:`), not where a nested
    /// block happens to start.
    fn enter_node(&mut self, mark: Marker) {
        let mut line = mark.line();
        match self.stack.last() {
            Some(Frame::Seq { items, .. }) => self.path.push(Seg::Index(items.len())),
            Some(Frame::Map {
                pending_key: Some((k, key_line)),
                ..
            }) => {
                line = *key_line;
                self.path.push(Seg::Key(k.clone()));
            }
            _ => {}
        }
        if self.stack.is_empty() {
            self.doc_line = mark.line();
        }
        if self.index {
            self.lines.insert(YamlPath(self.path.clone()), line);
        }
    }

    fn finish_node(&mut self, v: Value, anchor: usize, nodes: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, (v.clone(), nodes));
        }
        if let Some(Frame::Map { nodes: n, .. } | Frame::Seq { nodes: n, .. }) =
            self.stack.last_mut()
        {
            *n += nodes;
        }
        match self.stack.last_mut() {
            None => {
                let lines = std::mem::take(&mut self.lines);
                self.docs.push(Doc {
                    line: self.doc_line,
                    value: v,
                    lines,
                });
            }
            Some(Frame::Seq { items, .. }) => {
                items.push(v);
                self.path.pop();
            }
            Some(Frame::Map {
                map, pending_key, ..
            }) => {
                let (k, _) = pending_key.take().unwrap_or_default();
                map.insert(k, v);
                self.path.pop();
            }
        }
    }
}

fn scalar_value(
    text: String,
    style: TScalarStyle,
    tag: &Option<Tag>,
    schema: Schema,
) -> Result<Value, String> {
    let plain = |t: &str| match schema {
        Schema::Kubernetes => plain_scalar(t),
        Schema::Core => core_scalar(t),
    };
    if let Some(tag) = tag {
        if tag.handle == "tag:yaml.org,2002:" || tag.handle == "!!" {
            return match tag.suffix.as_str() {
                "str" => Ok(Value::String(text)),
                "null" => Ok(Value::Null),
                "bool" => match text.as_str() {
                    "true" | "True" | "TRUE" => Ok(Value::Bool(true)),
                    "false" | "False" | "FALSE" => Ok(Value::Bool(false)),
                    _ => Err(format!("{text:?} is not a !!bool")),
                },
                "int" | "float" => plain(&text).ok_or_else(|| format!("{text:?} is not a number")),
                other => Err(format!("unsupported tag !!{other}")),
            };
        }
        return Err(format!(
            "unsupported tag {}{}: Kubernetes manifests use plain YAML",
            tag.handle, tag.suffix
        ));
    }
    if style != TScalarStyle::Plain {
        return Ok(Value::String(text));
    }
    Ok(plain(&text).unwrap_or(Value::String(text)))
}

/// YAML 1.2 core-schema resolution of an unquoted scalar: how canopy's own
/// documents are read.
fn core_scalar(text: &str) -> Option<Value> {
    use yaml_rust2::Yaml;
    match Yaml::from_str(text) {
        Yaml::Null => Some(Value::Null),
        Yaml::Boolean(b) => Some(Value::Bool(b)),
        Yaml::Integer(i) => Some(Value::Number(i.into())),
        Yaml::Real(r) => {
            let f: f64 = match r.as_str() {
                ".inf" | ".Inf" | ".INF" | "+.inf" => f64::INFINITY,
                "-.inf" | "-.Inf" | "-.INF" => f64::NEG_INFINITY,
                _ => r.parse().ok()?,
            };
            // JSON has no NaN or infinity; such a scalar stays a string.
            Number::from_f64(f).map(Value::Number)
        }
        _ => None,
    }
}

/// What an unquoted scalar is, read as Kubernetes reads it: its YAML
/// reader (sigs.k8s.io/yaml, on go-yaml v2) keeps YAML 1.1's rules, so a
/// manifest means on canopy's side what it means on the API server's.
/// `defaultMode: 0755` is the octal 493, not 755 (a YAML 1.2 reader's
/// answer, which the API server then refuses); `yes`/`no`/`on`/`off`/`y`/`n`
/// are booleans; `1_000` is 1000; `0x1F`, `0o17` and `0b101` are numbers.
/// Sexagesimal `1:30` stays a string, as there. A `None` is a string
/// (also infinities and NaN, which JSON cannot hold).
pub fn plain_scalar(text: &str) -> Option<Value> {
    match text {
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Some(Value::Bool(true))
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Some(Value::Bool(false))
        }
        "" | "~" | "null" | "Null" | "NULL" => return Some(Value::Null),
        _ => {}
    }
    let first = text.as_bytes()[0];
    if first == b'.' {
        return float_of(text);
    }
    if !(first.is_ascii_digit() || first == b'+' || first == b'-') {
        return None;
    }
    let plain = text.replace('_', "");
    if let Some(n) = int_of(&plain) {
        return Some(Value::Number(n));
    }
    float_of(&plain)
}

/// An integer as Go's `ParseInt(s, 0, 64)` reads it (and, when that
/// overflows, `ParseUint`): a sign, then `0x`, `0o` or `0b` and digits of
/// that base, or a leading `0` for octal, or decimal digits.
fn int_of(s: &str) -> Option<Number> {
    let (negative, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = body.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u64::from_str_radix(digits, radix).ok()?;
    if negative {
        let n = i64::try_from(magnitude)
            .map(|m| -m)
            .ok()
            .or((magnitude == 1 << 63).then_some(i64::MIN))?;
        Some(n.into())
    } else {
        Some(magnitude.into())
    }
}

/// A float in YAML's form (`[-+]?(.d+|d+(.d*)?)([eE][-+]?d+)?`), as a JSON
/// number; `None` for anything else.
fn float_of(s: &str) -> Option<Value> {
    let b = s.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return None;
        }
    } else {
        if digits(&mut i) == 0 {
            return None;
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            digits(&mut i);
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return None;
        }
    }
    if i != b.len() {
        return None;
    }
    Number::from_f64(s.parse().ok()?).map(Value::Number)
}

fn key_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        match ev {
            Event::DocumentStart => {
                self.anchors.clear();
                self.lines.clear();
            }
            Event::Scalar(text, style, anchor, tag) => {
                let templated = self.slots.is_some() && has_template_syntax(&text);
                let slot_style = match style {
                    TScalarStyle::Plain => ScalarStyle::Plain,
                    TScalarStyle::SingleQuoted => ScalarStyle::SingleQuoted,
                    TScalarStyle::DoubleQuoted => ScalarStyle::DoubleQuoted,
                    _ => ScalarStyle::Block,
                };
                let source = templated.then(|| text.clone());
                let v = match scalar_value(text, style, &tag, self.schema) {
                    Ok(v) => v,
                    Err(m) => return self.fail(mark, m),
                };
                if self.next_is_key() {
                    if source.is_some() {
                        self.template_in_key = true;
                    }
                    if let Some(Frame::Map {
                        map, pending_key, ..
                    }) = self.stack.last_mut()
                    {
                        let k = key_text(&v);
                        if map.contains_key(&k) {
                            return self.fail(mark, format!("duplicate key {k:?}"));
                        }
                        *pending_key = Some((k, mark.line()));
                    }
                    return;
                }
                self.enter_node(mark);
                if let (Some(source), Some(slots)) = (source, self.slots.as_mut()) {
                    slots.push(TemplateSlot {
                        doc: self.docs.len(),
                        path: self.path.clone(),
                        style: slot_style,
                        source,
                        line: mark.line(),
                    });
                }
                self.finish_node(v, anchor, 1);
            }
            Event::Alias(id) => {
                // An alias could copy a templated scalar where no slot records
                // it; such files are rendered as text.
                if self.slots.is_some() {
                    self.template_in_key = true;
                }
                let Some(&(_, nodes)) = self.anchors.get(&id) else {
                    return self.fail(mark, "alias to an unknown anchor".into());
                };
                if self.next_is_key() {
                    return self.fail(mark, "an alias cannot be a mapping key".into());
                }
                // Counted before the copy is made, so a bomb never is.
                self.aliased += nodes;
                if self.aliased > MAX_ALIAS_NODES {
                    return self.fail(
                        mark,
                        format!(
                            "aliases here expand to more than {MAX_ALIAS_NODES} nodes (canopy's limit on YAML alias expansion); write the values out instead of repeating anchors"
                        ),
                    );
                }
                let v = self.anchors[&id].0.clone();
                self.enter_node(mark);
                self.finish_node(v, 0, nodes);
            }
            Event::MappingStart(anchor, _) | Event::SequenceStart(anchor, _)
                if self.next_is_key() =>
            {
                let _ = anchor;
                self.fail(mark, "a mapping key must be a scalar".into())
            }
            Event::MappingStart(..) | Event::SequenceStart(..) if self.stack.len() >= MAX_DEPTH => {
                self.fail(
                    mark,
                    format!(
                        "mappings and sequences nest deeper than {MAX_DEPTH} levels here (canopy's limit); flatten the structure"
                    ),
                )
            }
            Event::MappingStart(anchor, _) => {
                self.enter_node(mark);
                self.stack.push(Frame::Map {
                    map: Map::new(),
                    pending_key: None,
                    anchor,
                    nodes: 1,
                });
            }
            Event::SequenceStart(anchor, _) => {
                self.enter_node(mark);
                self.stack.push(Frame::Seq {
                    items: Vec::new(),
                    anchor,
                    nodes: 1,
                });
            }
            Event::MappingEnd => {
                if let Some(Frame::Map {
                    map, anchor, nodes, ..
                }) = self.stack.pop()
                {
                    self.finish_node(Value::Object(map), anchor, nodes);
                }
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq {
                    items,
                    anchor,
                    nodes,
                }) = self.stack.pop()
                {
                    self.finish_node(Value::Array(items), anchor, nodes);
                }
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
    }
}

/// The node at `path` inside `v`, if it exists.
pub fn value_at_mut<'v>(v: &'v mut Value, path: &[Seg]) -> Option<&'v mut Value> {
    let mut cur = v;
    for seg in path {
        cur = match seg {
            Seg::Key(k) => cur.get_mut(k.as_str())?,
            Seg::Index(i) => cur.get_mut(*i)?,
        };
    }
    Some(cur)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_and_lines() {
        let text = "a: 1\nb:\n  c: [x, 'y']\n  d: ~\n---\n- true\n- \"2\"\n- 2.5\n";
        let docs = parse_stream(text, true).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(
            docs[0].value,
            json!({"a": 1, "b": {"c": ["x", "y"], "d": null}})
        );
        assert_eq!(docs[1].value, json!([true, "2", 2.5]));
        assert_eq!(docs[0].line_of(&YamlPath::parse("b.c[1]")), 3);
        assert_eq!(docs[0].line_of(&YamlPath::parse("b.d")), 4);
        assert_eq!(docs[1].line, 6);
        // A path that does not exist falls back to its nearest ancestor.
        assert_eq!(docs[0].line_of(&YamlPath::parse("b.missing")), 2);
    }

    /// Issue 16, item 1: unquoted scalars read as the Kubernetes API
    /// server's YAML reader (go-yaml v2, YAML 1.1 rules) reads them; quoted
    /// ones stay strings.
    #[test]
    fn scalars_read_as_kubernetes_reads_them() {
        let cases: &[(&str, Value)] = &[
            ("0755", json!(493)),
            ("0644", json!(420)),
            ("0", json!(0)),
            ("-017", json!(-15)),
            ("08", json!(8.0)),
            ("0x1F", json!(31)),
            ("0o17", json!(15)),
            ("0b101", json!(5)),
            ("-0b101", json!(-5)),
            ("1_000", json!(1000)),
            ("+12", json!(12)),
            ("18446744073709551615", json!(18446744073709551615u64)),
            ("-9223372036854775808", json!(i64::MIN)),
            ("1e3", json!(1000.0)),
            ("2.5", json!(2.5)),
            (".5", json!(0.5)),
            ("5.", json!(5.0)),
            ("yes", json!(true)),
            ("Y", json!(true)),
            ("On", json!(true)),
            ("no", json!(false)),
            ("n", json!(false)),
            ("OFF", json!(false)),
            ("True", json!(true)),
            ("~", Value::Null),
            ("1:30", json!("1:30")),
            // go-yaml v2 resolves timestamps, then hands an interface{}
            // their text "for backward compatibility" (decode.go): the
            // API server stores the text.
            ("2001-12-14", json!("2001-12-14")),
            (
                "2001-12-14T21:59:43.10-05:00",
                json!("2001-12-14T21:59:43.10-05:00"),
            ),
            ("0x", json!("0x")),
            ("1.2.3", json!("1.2.3")),
            (".inf", json!(".inf")),
            ("-.inf", json!("-.inf")),
            (".nan", json!(".nan")),
            ("nginx:1.27", json!("nginx:1.27")),
            ("yesterday", json!("yesterday")),
            ("1e", json!("1e")),
        ];
        for (text, want) in cases {
            let docs = parse_stream(&format!("v: {text}\nq: '{text}'\n"), false).unwrap();
            assert_eq!(&docs[0].value["v"], want, "{text}");
            assert_eq!(docs[0].value["q"], json!(text), "quoted {text}");
        }
        // podinfo's CronJob volume, as the API server reads it.
        let docs = parse_stream(
            "volumes:\n  - name: config\n    configMap: {name: c, defaultMode: 0755}\n",
            false,
        )
        .unwrap();
        assert_eq!(docs[0].value["volumes"][0]["configMap"]["defaultMode"], 493);
        // A key is resolved the same way, and written as JSON writes it.
        let docs = parse_stream("on: push\n", false).unwrap();
        assert_eq!(docs[0].value, json!({"true": "push"}));
        // canopy's own documents keep YAML 1.2's core schema: a cluster
        // named `no` stays a name.
        let docs = parse_with("names: [no, on, y]\nn: 1_000\n", false, Schema::Core).unwrap();
        assert_eq!(
            docs[0].value,
            json!({"names": ["no", "on", "y"], "n": "1_000"})
        );
    }

    #[test]
    fn anchors_resolve() {
        let docs = parse_stream("x: &a {k: v}\nz: *a\n", false).unwrap();
        assert_eq!(docs[0].value, json!({"x": {"k": "v"}, "z": {"k": "v"}}));
    }

    #[test]
    fn syntax_error_has_line() {
        let err = parse_stream("a: 1\nb: [1, 2\nc: 3\n", false).unwrap_err();
        assert!(err.line >= 2, "{err:?}");
    }

    #[test]
    fn duplicate_key_is_an_error() {
        let err = parse_stream("a: 1\na: 2\n", false).unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.message.contains("duplicate key"));
    }

    #[test]
    fn alias_expansion_is_bounded() {
        // Nine levels of ten aliases each: a billion leaves from a few
        // hundred bytes. Refused at the alias that crosses the budget.
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let err = parse_stream(&text, false).unwrap_err();
        assert!(err.message.contains("more than 100000 nodes"), "{err:?}");
        assert_eq!(err.line, 5, "the first alias over the budget: {err:?}");
        // Aliases within the budget still work.
        let docs = parse_stream("a: &a [1, 2]\nb: [*a, *a]\n", false).unwrap();
        assert_eq!(docs[0].value, json!({"a": [1, 2], "b": [[1, 2], [1, 2]]}));
    }

    #[test]
    fn nesting_is_bounded_in_block_and_flow_style() {
        let flow = |n: usize| format!("{}{}\n", "[".repeat(n), "]".repeat(n));
        assert!(parse_stream(&flow(MAX_DEPTH), false).is_ok());
        let err = parse_stream(&flow(MAX_DEPTH + 1), false).unwrap_err();
        assert!(err.message.contains("deeper than 100 levels"), "{err:?}");
        let block = |n: usize| {
            (0..n)
                .map(|i| format!("{}k{i}:\n", "  ".repeat(i)))
                .collect::<String>()
                + &"  ".repeat(n)
                + "v: 1\n"
        };
        assert!(parse_stream(&block(MAX_DEPTH - 1), false).is_ok());
        let err = parse_stream(&block(MAX_DEPTH), true).unwrap_err();
        assert_eq!(err.line, MAX_DEPTH + 1, "{err:?}");
        // Far deeper input fails the same way, without exhausting the stack.
        assert!(parse_stream(&flow(100_000), false).is_err());
        // What canopy accepts, serde_json reads back with room to spare.
        let deepest = parse_stream(&flow(MAX_DEPTH), false).unwrap();
        assert_eq!(depth(&deepest[0].value), MAX_DEPTH);
        assert_eq!(depth(&json!({"a": [1, {"b": 2}], "c": 3})), 3);
        assert_eq!(depth(&json!(1)), 0);
        let wrapped = json!({"objects": {"id": deepest[0].value}});
        let text = serde_json::to_string(&wrapped).unwrap();
        assert!(serde_json::from_str::<Value>(&text).is_ok());
    }

    #[test]
    fn a_nul_byte_is_an_error_where_it_is() {
        let err = parse_stream("a: 1\n---\nb: 2\0\n---\nc: 3\n", false).unwrap_err();
        assert_eq!((err.line, err.col), (3, 4), "{err:?}");
        assert!(err.message.contains("NUL byte (at byte 13)"), "{err:?}");
        assert!(parse_template_slots("a: '{{ x }}'\0").is_none());
    }

    #[test]
    fn path_display_quotes_odd_keys() {
        let p = YamlPath::root()
            .key("metadata")
            .key("labels")
            .key("example.com/tier");
        assert_eq!(p.to_string(), "metadata.labels[\"example.com/tier\"]");
        assert_eq!(YamlPath::parse("spec.x[3].y").to_string(), "spec.x[3].y");
    }
}
