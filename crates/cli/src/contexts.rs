//! Saved connections (`tributary context add prod --url ...`), chosen with `--context NAME` or
//! `context use NAME`, so an operator does not retype a URL with a password in it. They live in
//! `$TRIBUTARY_CONFIG`, else `$XDG_CONFIG_HOME/tributary/contexts.json`, else
//! `~/.config/tributary/contexts.json`, readable by its owner only (it holds passwords). No
//! command prints a password: URLs are shown redacted.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{json, Value};
use tributary::connection::redact_url;
use tributary::BoxError;

use crate::cli::{ContextCommand, Output};

/// One saved connection.
#[derive(Debug, Clone, Default)]
pub(crate) struct Context {
    pub(crate) url: String,
    pub(crate) namespace: Option<String>,
    pub(crate) tls_ca: Option<PathBuf>,
}

/// The file's contents.
#[derive(Debug, Default)]
struct Saved {
    current: Option<String>,
    contexts: BTreeMap<String, Context>,
}

fn path() -> Result<PathBuf, BoxError> {
    if let Some(p) = std::env::var_os("TRIBUTARY_CONFIG") {
        return Ok(PathBuf::from(p));
    }
    let base = match std::env::var_os("XDG_CONFIG_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").ok_or("no HOME to keep contexts in; set TRIBUTARY_CONFIG")?)
            .join(".config"),
    };
    Ok(base.join("tributary").join("contexts.json"))
}

fn load() -> Result<Saved, BoxError> {
    let path = path()?;
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Saved::default()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display()).into()),
    };
    let doc: Value = serde_json::from_str(&text).map_err(|e| format!("{} is not valid JSON: {e}", path.display()))?;
    let mut saved = Saved { current: doc["current"].as_str().map(str::to_owned), ..Saved::default() };
    if let Some(all) = doc["contexts"].as_object() {
        for (name, c) in all {
            let url = c["url"].as_str().ok_or_else(|| format!("context `{name}` in {} has no url", path.display()))?;
            saved.contexts.insert(
                name.clone(),
                Context {
                    url: url.to_owned(),
                    namespace: c["namespace"].as_str().map(str::to_owned),
                    tls_ca: c["tls_ca"].as_str().map(PathBuf::from),
                },
            );
        }
    }
    Ok(saved)
}

fn store(saved: &Saved) -> Result<(), BoxError> {
    let path = path()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let contexts: serde_json::Map<String, Value> = saved
        .contexts
        .iter()
        .map(|(name, c)| {
            let tls_ca = c.tls_ca.as_ref().map(|p| p.display().to_string());
            (name.clone(), json!({ "url": c.url, "namespace": c.namespace, "tls_ca": tls_ca }))
        })
        .collect();
    let text = serde_json::to_string_pretty(&json!({ "current": saved.current, "contexts": contexts }))?;
    // Written to a new file readable by its owner only, then moved over the old one.
    let tmp = path.with_extension("json.tmp");
    {
        use std::io::Write;
        // A new file, so the mode applies (an existing one would keep its permissions).
        let _ = std::fs::remove_file(&tmp);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        file.write_all(text.as_bytes())?;
    }
    std::fs::rename(&tmp, &path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

/// The context to connect with: the one named by `--context`, else the current one, if any.
pub(crate) fn selected(name: Option<&str>) -> Result<Option<(String, Context)>, BoxError> {
    let saved = load()?;
    let Some(name) = name.map(str::to_owned).or(saved.current.clone()) else { return Ok(None) };
    match saved.contexts.get(&name) {
        Some(c) => Ok(Some((name, c.clone()))),
        None => Err(format!(
            "no context `{name}` (contexts: {}; add one with `tributary context add {name} --url ...`)",
            if saved.contexts.is_empty() {
                "none".to_owned()
            } else {
                saved.contexts.keys().cloned().collect::<Vec<_>>().join(", ")
            }
        )
        .into()),
    }
}

/// `tributary context add | list | use | remove`. `url`, `namespace` and `tls_ca` are the
/// global options, when given explicitly.
pub(crate) fn run(
    out: Output,
    command: ContextCommand,
    url: Option<String>,
    namespace: Option<String>,
    tls_ca: Option<PathBuf>,
) -> Result<(), BoxError> {
    let mut saved = load()?;
    match command {
        ContextCommand::Add { name } => {
            let url = url.ok_or("give the context's URL with --url")?;
            let shown = redact_url(&url);
            saved.contexts.insert(name.clone(), Context { url, namespace, tls_ca });
            if saved.current.is_none() {
                saved.current = Some(name.clone());
            }
            store(&saved)?;
            println!("saved context {name} ({shown}) in {}", path()?.display());
        }
        ContextCommand::List => {
            let rows = saved
                .contexts
                .iter()
                .map(|(name, c)| {
                    vec![
                        json!(name),
                        json!(saved.current.as_deref() == Some(name.as_str())),
                        json!(redact_url(&c.url)),
                        json!(c.namespace.as_deref().unwrap_or("tributary")),
                    ]
                })
                .collect();
            crate::output::rows(out, &["context", "current", "url", "namespace"], rows);
        }
        ContextCommand::Use { name } => {
            if !saved.contexts.contains_key(&name) {
                return Err(format!("no context `{name}`; add it with `tributary context add {name} --url ...`").into());
            }
            saved.current = Some(name.clone());
            store(&saved)?;
            println!("using context {name}");
        }
        ContextCommand::Remove { name } => {
            if saved.contexts.remove(&name).is_none() {
                return Err(format!("no context `{name}`").into());
            }
            if saved.current.as_deref() == Some(name.as_str()) {
                saved.current = None;
            }
            store(&saved)?;
            println!("removed context {name}");
        }
    }
    Ok(())
}
