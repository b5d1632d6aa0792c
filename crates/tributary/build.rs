//! Rewrites the links of the README and the guides for rustdoc: `docs/delivery.md` (README) and
//! `delivery.md` (between guides) become links to the guide modules (`crate::guide::delivery`),
//! which work wherever the docs are rendered (docs.rs, `cargo doc`); links to files that are not
//! guides (examples, crates) keep their text and lose the link. The Markdown files stay as they
//! are for GitHub.

use std::path::Path;

const GUIDES: [&str; 14] = [
    "delivery",
    "rpc",
    "time",
    "wire-format",
    "keys",
    "reliability",
    "security",
    "cli",
    "production",
    "troubleshooting",
    "from-pubsub",
    "performance",
    "observability",
    "partitions",
];

fn main() {
    let out = std::env::var("OUT_DIR").expect("OUT_DIR");
    let out = Path::new(&out);
    println!("cargo:rerun-if-changed=README.md");
    let readme = std::fs::read_to_string("README.md").expect("README.md");
    std::fs::write(out.join("README.md"), rewrite(&readme, |t| t.strip_prefix("docs/"), "crate::guide::"))
        .expect("write README");
    std::fs::create_dir_all(out.join("guide")).expect("create guide dir");
    for guide in GUIDES {
        let path = format!("guide/{guide}.md");
        println!("cargo:rerun-if-changed={path}");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        std::fs::write(out.join(&path), rewrite(&text, Some, "crate::guide::")).expect("write guide");
    }
}

/// `text` with every inline link `[..](target)` rewritten: a guide (`name.md`, after `local`
/// strips any directory) becomes `{module}name`, another file keeps only the link text, and
/// absolute URLs and anchors are left alone.
fn rewrite<'a>(text: &'a str, local: impl Fn(&'a str) -> Option<&'a str>, module: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("](") {
        let Some(close) = rest[at + 2..].find(')') else { break };
        let target = &rest[at + 2..at + 2 + close];
        let (file, fragment) = target.split_once('#').map_or((target, None), |(f, frag)| (f, Some(frag)));
        let external = target.contains("://") || target.starts_with('#') || target.contains("::");
        let guide = local(file).and_then(|f| f.strip_suffix(".md")).filter(|g| GUIDES.contains(g));
        out.push_str(&rest[..at]);
        match (external, guide) {
            (true, _) => out.push_str(&rest[at..at + 3 + close]),
            (false, Some(guide)) => {
                out.push_str("](");
                out.push_str(module);
                out.push_str(&guide.replace('-', "_"));
                if let Some(fragment) = fragment {
                    out.push('#');
                    out.push_str(fragment);
                }
                out.push(')');
            }
            (false, None) if file.ends_with(".rs") || file.contains('/') || file.ends_with(".md") => {
                // A file rustdoc cannot link to: keep the text, drop the brackets.
                if let Some(open) = out.rfind('[') {
                    out.remove(open);
                }
            }
            (false, None) => out.push_str(&rest[at..at + 3 + close]),
        }
        rest = &rest[at + 3 + close..];
    }
    out.push_str(rest);
    out
}
