//! The descriptive `general.*` keys llama.cpp's `convert_lora_to_gguf.py` writes, from gguf-py's
//! `Metadata.load` heuristics applied to the adapter folder: its model card (`README.md` YAML
//! front matter, which PEFT writes: `base_model`, `tags`, `pipeline_tag`, …), its `config.json`
//! if any (`_name_or_path`), and the folder's own name (`peft_adapter` → `Peft_Adapter`).
//!
//! The front matter is read with a small YAML subset (top-level `key: scalar`, block and flow
//! lists of scalars), which covers what PEFT and the Hub write; nested mappings are skipped.
//! Not reproduced: `generation_config.json` sampling keys and `--metadata` overrides.

use std::collections::BTreeMap;
use std::path::Path;

use fancy_regex::Regex;
use nexus_runtime::gguf::{Value, ValueType};

/// A front-matter value: a string scalar, a list of string scalars, or something else.
#[derive(Debug, Clone, PartialEq)]
enum Yaml {
    Str(String),
    List(Vec<String>),
    /// Numbers, booleans, nested mappings: present but not a string.
    Other,
}

/// The YAML front matter of `README.md` in `dir`, as gguf-py's `load_model_card` finds it.
fn model_card(dir: &Path) -> BTreeMap<String, Yaml> {
    let Ok(content) = std::fs::read_to_string(dir.join("README.md")) else { return BTreeMap::new() };
    let mut lines = content.lines();
    if lines.next() != Some("---") {
        return BTreeMap::new();
    }
    let mut yaml = String::new();
    for line in lines {
        if line == "---" {
            break;
        }
        yaml.push_str(line);
        yaml.push('\n');
    }
    // gguf-py's two fix-ups before yaml.safe_load.
    let yaml = yaml.replace("- no\n", "- \"no\"\n").replace('\t', "  ");
    parse_yaml_subset(&yaml)
}

fn unquote(s: &str) -> Yaml {
    let s = s.trim();
    if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        return Yaml::Str(s[1..s.len() - 1].replace("\\\"", "\"").replace("\\\\", "\\"));
    }
    if s.len() >= 2 && s.starts_with('\'') && s.ends_with('\'') {
        return Yaml::Str(s[1..s.len() - 1].replace("''", "'"));
    }
    // A plain scalar ends at a comment; `key: value` inside a list item is a mapping.
    let s = s.split_once(" #").map_or(s, |(v, _)| v).trim_end();
    if s.contains(": ") || s.ends_with(':') {
        return Yaml::Other;
    }
    // YAML 1.1 plain scalars that safe_load turns into something other than a string.
    let lower = s.to_ascii_lowercase();
    let non_string = ["null", "~", "true", "false", "yes", "no", "on", "off", ""].contains(&lower.as_str())
        || s.parse::<f64>().is_ok()
        || s.starts_with(['{', '&', '*', '!', '|', '>']);
    if non_string {
        Yaml::Other
    } else {
        Yaml::Str(s.to_string())
    }
}

fn parse_yaml_subset(yaml: &str) -> BTreeMap<String, Yaml> {
    let mut out = BTreeMap::new();
    let mut current: Option<(String, Vec<String>, bool)> = None; // key, items, saw a non-item line
    let flush = |out: &mut BTreeMap<String, Yaml>, cur: Option<(String, Vec<String>, bool)>| {
        if let Some((k, items, nested)) = cur {
            let v = if nested || items.is_empty() { Yaml::Other } else { Yaml::List(items) };
            out.insert(k, v);
        }
    };
    for line in yaml.lines() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let indented = line.starts_with(' ');
        let trimmed = line.trim_start();
        if let Some((_, items, nested)) = current.as_mut() {
            if let Some(item) = trimmed.strip_prefix("- ").or((trimmed == "-").then_some("")) {
                match unquote(item) {
                    Yaml::Str(s) => items.push(s),
                    _ => *nested = true,
                }
                continue;
            }
            if indented {
                *nested = true;
                continue;
            }
        }
        if indented {
            continue;
        }
        flush(&mut out, current.take());
        let Some((key, rest)) = line.split_once(':') else { continue };
        let key = match unquote(key) {
            Yaml::Str(k) => k,
            _ => continue,
        };
        let rest = rest.trim();
        if rest.is_empty() {
            current = Some((key, Vec::new(), false));
        } else if let Some(inner) = rest.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            let items: Vec<Yaml> = inner.split(',').filter(|s| !s.trim().is_empty()).map(unquote).collect();
            let v = if items.iter().all(|i| matches!(i, Yaml::Str(_))) {
                Yaml::List(items.into_iter().filter_map(|i| if let Yaml::Str(s) = i { Some(s) } else { None }).collect())
            } else {
                Yaml::Other
            };
            out.insert(key, v);
        } else {
            out.insert(key, unquote(rest));
        }
    }
    flush(&mut out, current.take());
    out
}

/// Compiles each constant pattern once per process: model-card names are matched for every
/// adapter converted, and compiling the six patterns was most of a small conversion's time
/// (the peft_adapter fuzz target's profile).
fn re(pattern: &'static str) -> &'static Regex {
    static CACHE: std::sync::OnceLock<std::sync::Mutex<Vec<(&'static str, &'static Regex)>>> = std::sync::OnceLock::new();
    let mut cache = CACHE.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&(_, r)) = cache.iter().find(|(p, _)| *p == pattern) {
        return r;
    }
    let compiled: &'static Regex = Box::leak(Box::new(Regex::new(pattern).unwrap_or_else(|e| unreachable!("constant regex {pattern}: {e}"))));
    cache.push((pattern, compiled));
    compiled
}

/// Python's `str.title()`: the first cased character of each run upper-case, the rest lower.
fn py_title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_cased = false;
    for c in s.chars() {
        let cased = c.is_lowercase() || c.is_uppercase();
        if cased && !prev_cased {
            out.extend(c.to_uppercase());
        } else if cased {
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
        prev_cased = cased;
    }
    out
}

/// Python's `str.islower()`: at least one cased character and none upper-case.
fn py_islower(s: &str) -> bool {
    s.chars().any(|c| c.is_lowercase()) && !s.chars().any(|c| c.is_uppercase())
}

/// gguf-py's `Metadata.id_to_title`.
fn id_to_title(s: &str) -> String {
    let version = re(r"^(v\d+(?:\.\d+)*|\d.*)$");
    s.trim()
        .replace('-', " ")
        .split_whitespace()
        .map(|w| if py_islower(w) && !version.is_match(w).unwrap_or(false) { py_title(w) } else { w.to_string() })
        .collect::<Vec<_>>()
        .join(" ")
}

/// gguf-py's `Metadata.get_model_id_components`: (full name, organization, basename, finetune,
/// version, size label) of a Hub-style model id.
#[derive(Debug, Default, PartialEq)]
struct IdParts {
    name: Option<String>,
    org: Option<String>,
    basename: Option<String>,
    finetune: Option<String>,
    version: Option<String>,
    size_label: Option<String>,
}

fn model_id_components(model_id: &str, total_params: i64) -> IdParts {
    if model_id.contains(' ') {
        return IdParts { name: Some(model_id.into()), ..IdParts::default() };
    }
    let (mut org, full) = match model_id.split_once('/') {
        Some((o, n)) => (Some(o.to_string()), n.to_string()),
        None => (None, model_id.to_string()),
    };
    if org.as_deref().is_some_and(|o| o.starts_with('.')) {
        org = None;
    }
    let mut parts: Vec<String> = full.split('-').filter(|p| !p.is_empty()).map(str::to_string).collect();
    let mut types: Vec<Vec<&str>> = vec![Vec::new(); parts.len()];
    let version = re(r"(?i)^(v|iter)?\d+([.]\d+)*$");
    let quant = re(r"(?i)^(i?q\d(_\w)*|b?fp?(16|32))$");
    let size = re(r"(?i)^(([A]|\d+[x])?\d+([._]\d+)?[KMBT][\d]?|small|mini|medium|large|x?xl)$");
    let finetune = re(r"(?i)^(chat|instruct|vision|lora)$");
    let m = |r: &Regex, s: &str| r.is_match(s).unwrap_or(false);
    for i in 0..parts.len() {
        let part = parts[i].clone();
        if m(version, &part) {
            types[i].push("version");
        } else if m(quant, &part) {
            types[i].push("type");
            parts[i] = part.to_uppercase();
        } else if i > 0 && m(size, &part) {
            let mut p: Vec<char> = part.replace('_', ".").chars().collect();
            let n = p.len();
            if p[n - 1].is_ascii_digit() && n >= 2 {
                // bloom-7b1 → 7.1b
                let (a, b) = (p[n - 2], p[n - 1]);
                p.truncate(n - 2);
                p.extend(['.', b, a]);
            }
            let n = p.len();
            if n > 1 && p[n - 2].is_ascii_digit() && "kmbt".contains(p[n - 1]) {
                p[n - 1] = p[n - 1].to_ascii_uppercase();
            }
            if total_params != 0 {
                let head: String = p[..p.len() - 1].iter().collect();
                if let (Ok(x), Some(e)) = (head.parse::<f64>(), " KMBT".find(p[p.len() - 1])) {
                    let label = x * 1000f64.powi(e as i32);
                    let tp = total_params as f64;
                    let small_for_lora = total_params < 0 && label < (total_params.unsigned_abs() / 8) as f64;
                    let far = total_params > 0 && (label - tp).abs() > (7 * total_params / 8) as f64;
                    if small_for_lora || far {
                        types[i].push("finetune");
                        let last = p.len() - 1;
                        p[last] = p[last].to_ascii_lowercase();
                    }
                }
            }
            if types[i].is_empty() {
                types[i].push("size_label");
            }
            parts[i] = p.into_iter().collect();
        } else if i > 0 && m(finetune, &part) {
            types[i].push(if total_params < 0 && part.eq_ignore_ascii_case("lora") { "type" } else { "finetune" });
        }
    }
    let has_numeric_size = parts.iter().zip(&types).any(|(n, t)| t.contains(&"size_label") && n.chars().any(|c| c.is_ascii_digit()));
    if has_numeric_size {
        for (n, t) in parts.iter().zip(types.iter_mut()) {
            if t.contains(&"size_label") && n.chars().all(char::is_alphabetic) {
                t.retain(|x| *x != "size_label");
            }
        }
    }
    let mut at_start = true;
    for (part, t) in parts.iter().zip(types.iter_mut()) {
        let alpha_first = part.chars().next().is_some_and(char::is_alphabetic);
        if at_start && ((t.is_empty() && alpha_first) || t.contains(&"version")) {
            t.push("basename");
        } else {
            at_start = false;
            if t.is_empty() {
                t.push("finetune");
            }
        }
    }
    for t in types.iter_mut().rev() {
        if t.contains(&"basename") && t.len() > 1 {
            t.retain(|x| *x != "basename");
        } else {
            break;
        }
    }
    let join = |f: &dyn Fn(&Vec<&str>) -> bool| -> Option<String> {
        let mut seen: Vec<&str> = Vec::new();
        for (n, t) in parts.iter().zip(&types) {
            if f(t) && !seen.contains(&n.as_str()) {
                seen.push(n);
            }
        }
        (!seen.is_empty()).then(|| seen.join("-"))
    };
    let all = |f: &dyn Fn(&Vec<&str>) -> bool| -> Option<String> {
        let v: Vec<&str> = parts.iter().zip(&types).filter(|(_, t)| f(t)).map(|(n, _)| n.as_str()).collect();
        (!v.is_empty()).then(|| v.join("-"))
    };
    let mut basename = all(&|t| t.contains(&"basename"));
    let size_label = join(&|t| t.contains(&"size_label"));
    let finetune = all(&|t| t.contains(&"finetune"));
    let version = all(&|t| t.contains(&"version") && !t.contains(&"basename"));
    if size_label.is_none() && finetune.is_none() && version.is_none() {
        basename = None;
    }
    IdParts { name: Some(full), org, basename, finetune, version, size_label }
}

/// The `general.*` keys (after `general.type`) that llama.cpp writes for an adapter folder,
/// in its order. `total_params` is gguf-py's count for a LoRA: minus the sum of each pair's
/// `n_out·n_in`.
pub fn general_keys(peft_dir: &Path, total_params: i64) -> Vec<(String, Value)> {
    let card = model_card(peft_dir);
    let s = |k: &str| match card.get(k) {
        Some(Yaml::Str(v)) => Some(v.clone()),
        _ => None,
    };
    let list = |k: &str| -> Option<Vec<String>> {
        match card.get(k) {
            Some(Yaml::Str(v)) => Some(vec![v.clone()]),
            Some(Yaml::List(v)) => Some(v.clone()),
            _ => None,
        }
    };
    let first = |keys: &[&str]| keys.iter().find_map(|k| s(k));
    let mut name = first(&["name", "model_name"]);
    let author = first(&["author", "model_author", "model_creator"]);
    let mut version = first(&["version", "model_version"]);
    let mut organization = first(&["organization", "model_organization"]);
    let description = first(&["description", "model_description"]);
    let mut finetune = first(&["finetune", "model_finetune"]);
    let mut basename = first(&["basename", "model_basename", "model_type"]);
    let mut size_label = first(&["size_label", "model_size_label"]);
    let source_url = first(&["url", "model_url"]);
    let source_doi = first(&["doi", "model_doi"]);
    let source_uuid = first(&["uuid", "model_uuid"]);
    let source_repo_url = first(&["repo_url", "model_repo_url"]);

    // base_model (the first of base_model, base_models, base_model_sources that exists).
    let base_key = ["base_model", "base_models", "base_model_sources"].into_iter().find(|k| card.contains_key(*k));
    let base_models: Option<Vec<Vec<(&str, String)>>> = base_key.map(|k| {
        list(k).unwrap_or_default().iter().map(|id| hub_entry(id, total_params)).collect()
    });
    let dataset_key = ["datasets", "dataset", "dataset_sources"].into_iter().find(|k| card.contains_key(*k));
    let datasets: Option<Vec<Vec<(&str, String)>>> = dataset_key.map(|k| {
        list(k).unwrap_or_default().iter().map(|id| hub_entry(id, total_params)).collect()
    });
    let license = list("license").map(|v| v.join(","));
    let license_name = s("license_name");
    let license_link = s("license_link");
    let mut tags: Option<Vec<String>> = None;
    for k in ["tags", "pipeline_tag"] {
        if let Some(v) = list(k) {
            tags.get_or_insert_with(Vec::new).extend(v);
        }
    }
    let mut languages: Option<Vec<String>> = None;
    for k in ["languages", "language"] {
        if let Some(v) = list(k) {
            languages.get_or_insert_with(Vec::new).extend(v);
        }
    }

    // config.json's _name_or_path when it looks like a Hub id, then the folder's name.
    let mut ids = Vec::new();
    if let Ok(text) = std::fs::read_to_string(peft_dir.join("config.json")) {
        if let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) {
            if let Some(id) = json.get("_name_or_path").and_then(|v| v.as_str()).filter(|id| id.matches('/').count() <= 1) {
                ids.push(id.to_string());
            }
        }
    }
    ids.push(peft_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    for id in ids {
        let p = model_id_components(&id, total_params);
        name = name.or(p.name.map(|n| id_to_title(&n)));
        organization = organization.or(p.org.map(|o| id_to_title(&o)));
        basename = basename.or(p.basename);
        finetune = finetune.or(p.finetune);
        version = version.or(p.version);
        size_label = size_label.or(p.size_label);
    }

    let mut out: Vec<(String, Value)> = Vec::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            out.push((k.to_string(), Value::String(v)));
        }
    };
    put("general.name", name);
    put("general.author", author);
    put("general.version", version);
    put("general.organization", organization);
    put("general.finetune", finetune);
    put("general.basename", basename);
    put("general.description", description);
    put("general.size_label", size_label);
    put("general.license", license);
    put("general.license.name", license_name);
    put("general.license.link", license_link);
    put("general.source.url", source_url);
    put("general.source.doi", source_doi);
    put("general.source.uuid", source_uuid);
    put("general.source.repo_url", source_repo_url);
    for (prefix, entries) in [("base_model", base_models), ("dataset", datasets)] {
        let Some(entries) = entries else { continue };
        out.push((format!("general.{prefix}.count"), Value::U32(entries.len() as u32)));
        for (i, e) in entries.iter().enumerate() {
            for field in ["name", "author", "version", "organization", "description", "url", "doi", "uuid", "repo_url"] {
                if let Some((_, v)) = e.iter().find(|(f, _)| *f == field) {
                    out.push((format!("general.{prefix}.{i}.{field}"), Value::String(v.clone())));
                }
            }
        }
    }
    let strings = |v: Vec<String>| Value::Array(ValueType::String, v.into_iter().map(Value::String).collect());
    if let Some(t) = tags {
        out.push(("general.tags".into(), strings(t)));
    }
    if let Some(l) = languages {
        out.push(("general.languages".into(), strings(l)));
    }
    out
}

/// One `base_model` / `datasets` entry of a model card: a URL or a Hub id, as gguf-py reads it.
fn hub_entry(id: &str, total_params: i64) -> Vec<(&'static str, String)> {
    let mut e = Vec::new();
    let add_parts = |e: &mut Vec<(&'static str, String)>, p: &IdParts| {
        if let Some(n) = &p.name {
            e.push(("name", id_to_title(n)));
        }
        if let Some(o) = &p.org {
            e.push(("organization", id_to_title(o)));
        }
        if let Some(v) = &p.version {
            e.push(("version", v.clone()));
        }
    };
    if id.starts_with("http://") || id.starts_with("https://") || id.starts_with("ssh://") {
        e.push(("repo_url", id.to_string()));
        if id.contains("huggingface.co") {
            if let Ok(Some(c)) = re(r"^https?://huggingface.co/([^/]+/[^/]+)$").captures(id) {
                if let Some(m) = c.get(1) {
                    add_parts(&mut e, &model_id_components(m.as_str(), total_params));
                }
            }
        }
    } else {
        let p = model_id_components(id, total_params);
        add_parts(&mut e, &p);
        if let (Some(o), Some(n)) = (&p.org, &p.name) {
            e.push(("repo_url", format!("https://huggingface.co/{o}/{n}")));
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_like_python() {
        assert_eq!(id_to_title("peft_adapter"), "Peft_Adapter");
        assert_eq!(id_to_title("my-lora-v0.2"), "My Lora v0.2");
        assert_eq!(id_to_title("SmolLM2-135M"), "SmolLM2 135M");
        assert_eq!(py_title("a1b c"), "A1B C");
    }

    #[test]
    fn splits_hub_ids_like_gguf_py() {
        let p = model_id_components("meta-llama/Llama-2-7b-chat-hf", 0);
        assert_eq!(p.org.as_deref(), Some("meta-llama"));
        assert_eq!(p.name.as_deref(), Some("Llama-2-7b-chat-hf"));
        assert_eq!(p.basename.as_deref(), Some("Llama-2"));
        assert_eq!(p.size_label.as_deref(), Some("7B"));
        assert_eq!(p.finetune.as_deref(), Some("chat-hf"));
        let p = model_id_components("peft_adapter", -1000);
        assert_eq!((p.name.as_deref(), p.basename, p.finetune), (Some("peft_adapter"), None, None));
        // A LoRA's own "lora" part is its type, not a finetune.
        let p = model_id_components("Qwen2-0.5B-lora", -1_000_000);
        assert_eq!((p.basename.as_deref(), p.finetune), (Some("Qwen2"), None));
    }

    #[test]
    fn reads_peft_model_card_front_matter() {
        let card = "base_model: base\nlibrary_name: peft\npipeline_tag: text-generation\ntags:\n- base_model:adapter:base\n- lora\n- transformers\nlanguage: [en, 'fr']\nnested:\n  a: 1\n";
        let y = parse_yaml_subset(card);
        assert_eq!(y["base_model"], Yaml::Str("base".into()));
        assert_eq!(y["tags"], Yaml::List(vec!["base_model:adapter:base".into(), "lora".into(), "transformers".into()]));
        assert_eq!(y["language"], Yaml::List(vec!["en".into(), "fr".into()]));
        assert_eq!(y["nested"], Yaml::Other);
        let y = parse_yaml_subset("license: mit # the licence\nbase_model:\n- name: x\n  url: y\ntags: []\n");
        assert_eq!(y["license"], Yaml::Str("mit".into()));
        assert_eq!(y["base_model"], Yaml::Other);
        assert_eq!(y["tags"], Yaml::List(vec![]));
    }
}
