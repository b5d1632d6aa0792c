//! `cargo xtask public-api [--check]`: the public API of the published library crates as a
//! sorted text listing, committed as `docs/public-api.txt`.
//!
//! Only the stable toolchain is available (no rustdoc JSON), so the listing is scraped from
//! rustdoc's HTML: what `#[doc(hidden)]` hides is not in it, which is the point. The walk starts
//! at each crate's `index.html` and follows the module pages' item tables, so a page left in
//! `target/doc` by an item that no longer exists is never read. Auto-trait and blanket
//! implementations, methods reached through `Deref` and doc comments are left out: they are
//! noise, or depend on the compiler and the dependencies rather than on this code.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The published library crates, facade first: (package, library name). The order also
/// decides where a listing shared by several paths is printed (see [`render`]).
pub(crate) const CRATES: [(&str, &str); 5] = [
    ("tributary-redis", "tributary"),
    ("tributary-core", "tributary_core"),
    ("tributary-streams", "tributary_streams"),
    ("tributary-rpc", "tributary_rpc"),
    ("tributary-macros", "tributary_macros"),
];

/// Where the listing is committed, relative to the workspace root.
pub(crate) const SNAPSHOT: &str = "docs/public-api.txt";

const CHANGED: &str = "The public API changed. If that is intended, run `cargo xtask public-api`, commit \
                       docs/public-api.txt and note the change in CHANGELOG.md.";

const HEADER: &str = "\
# The public API of Tributary's published library crates, as `cargo doc` shows it (what
# #[doc(hidden)] hides is not here). Generated, do not edit: run `cargo xtask public-api` to
# regenerate it; `cargo xtask test` (`cargo xtask public-api --check`) fails when it is stale.
#
# One line per item, `path: declaration`. A struct, enum, union or trait is followed by its
# members, `path::name: signature` (fields, variants, associated items, methods; a method of a
# generic type, or of an impl block other than `impl Type`, is shown inside its impl block),
# then its trait implementations, `path: impl ...` (auto-trait and blanket implementations
# left out). `{ .. }` stands for the members listed on the lines below. A listing that would
# repeat another one line for line (the same item re-exported at another path) says
# `same as <path>` instead.
";

/// `cargo doc` arguments that build every page the listing reads: the published crates alone
/// (in a workspace build, the benchmarks' use of `unstable-fred` would turn it on for all) with
/// their default features, so the escape hatch without a stability promise is not listed.
pub(crate) fn doc_args() -> Vec<&'static str> {
    let mut args = vec!["doc", "--no-deps"];
    for (package, _) in CRATES {
        args.extend(["-p", package]);
    }
    args
}

/// Writes the listing of the docs under `doc_dir` to [`SNAPSHOT`], showing what changed.
pub(crate) fn write(doc_dir: &Path, root: &Path) -> Result<(), String> {
    let fresh = listing(doc_dir)?;
    let path = root.join(SNAPSHOT);
    let old = std::fs::read_to_string(&path).unwrap_or_default().replace("\r\n", "\n");
    if old == fresh {
        eprintln!("xtask: {SNAPSHOT} is up to date");
        return Ok(());
    }
    eprint!("{}", diff(&old, &fresh));
    std::fs::write(&path, &fresh).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    eprintln!("xtask: wrote {SNAPSHOT}; note the change in CHANGELOG.md");
    Ok(())
}

/// Compares the listing of the docs under `doc_dir` with the committed [`SNAPSHOT`].
pub(crate) fn check(doc_dir: &Path, root: &Path) -> Result<(), String> {
    let fresh = listing(doc_dir)?;
    let path = root.join(SNAPSHOT);
    let committed = std::fs::read_to_string(&path).unwrap_or_default().replace("\r\n", "\n");
    if committed == fresh {
        let items = fresh.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).count();
        eprintln!("xtask: public API unchanged ({items} lines in {SNAPSHOT})");
        return Ok(());
    }
    eprint!("{}", diff(&committed, &fresh));
    Err(CHANGED.to_owned())
}

/// The listing of the crates documented under `doc_dir`.
pub(crate) fn listing(doc_dir: &Path) -> Result<String, String> {
    let mut blocks = Vec::new();
    for (order, (package, krate)) in CRATES.into_iter().enumerate() {
        let index = doc_dir.join(krate).join("index.html");
        if !index.is_file() {
            return Err(format!(
                "{} is missing: document {package} first (`cargo {}`)",
                index.display(),
                doc_args().join(" ")
            ));
        }
        walk_module(&index, krate, order, format!("crate {krate}"), &mut blocks, 0)?;
    }
    Ok(render(blocks))
}

/// One item and what is listed under it.
#[derive(Debug, Clone, PartialEq)]
struct Block {
    path: String,
    /// Index in [`CRATES`] of the crate the path is in.
    order: usize,
    head: String,
    members: Vec<Member>,
    impls: Vec<String>,
}

/// A field, variant, associated item or method; ordered by kind, then name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Member {
    rank: Rank,
    name: String,
    signature: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Rank {
    Field,
    Type,
    Const,
    Method,
}

impl Member {
    fn new(rank: Rank, name: &str, signature: String) -> Self {
        Self { rank, name: name.to_owned(), signature }
    }
}

/// The rank of a `<section>` member from its id: `method.x`, `associatedtype.T`, ...
fn rank(id: &str) -> Rank {
    match id.split('.').next() {
        Some("associatedtype") => Rank::Type,
        Some("associatedconstant") => Rank::Const,
        Some("variant") => Rank::Field,
        _ => Rank::Method,
    }
}

fn walk_module(
    file: &Path,
    path: &str,
    order: usize,
    head: String,
    out: &mut Vec<Block>,
    depth: usize,
) -> Result<(), String> {
    if depth > 32 {
        return Err(format!("{}: modules nested more than 32 deep", file.display()));
    }
    let page = main_content(&read(file)?);
    out.push(Block { path: path.to_owned(), order, head, members: Vec::new(), impls: Vec::new() });
    let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
    for entry in parse_module(&page).map_err(|e| format!("{}: {e}", file.display()))? {
        match entry {
            Entry::Reexport { name, text } => out.push(Block {
                path: format!("{path}::{name}"),
                order,
                head: text,
                members: Vec::new(),
                impls: Vec::new(),
            }),
            Entry::Item { kind, name, href } => {
                let item_path = format!("{path}::{name}");
                let href = href.split('#').next().unwrap_or_default();
                if href.is_empty() || href.contains("://") || href.starts_with('/') {
                    // Not a page of this crate's docs: nothing more to read.
                    let head = format!("{kind} {name}");
                    out.push(Block { path: item_path, order, head, members: Vec::new(), impls: Vec::new() });
                } else if kind == "mod" {
                    walk_module(&dir.join(href), &item_path, order, format!("pub mod {name}"), out, depth + 1)?;
                } else {
                    let target = dir.join(href);
                    let page = main_content(&read(&target)?);
                    let item = parse_item(&kind, &name, &page).map_err(|e| format!("{}: {e}", target.display()))?;
                    out.push(Block { path: item_path, order, ..item });
                }
            }
        }
    }
    Ok(())
}

fn read(file: &Path) -> Result<String, String> {
    std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))
}

/// Sorted by path; a block with members whose listing equals another's is printed once, at the
/// path of the first crate in [`CRATES`] order, then the shortest, then the first path.
fn render(mut blocks: Vec<Block>) -> String {
    blocks.sort_by(|a, b| (&a.path, &a.head).cmp(&(&b.path, &b.head)));
    for b in &mut blocks {
        b.members.sort();
        b.impls.sort();
    }
    type Key<'a> = (&'a str, &'a [Member], &'a [String]);
    let mut listed_at: HashMap<Key<'_>, &Block> = HashMap::new();
    for b in blocks.iter().filter(|b| !b.members.is_empty() || !b.impls.is_empty()) {
        let rank = |b: &Block| (b.order, b.path.matches("::").count(), b.path.clone());
        listed_at
            .entry((&b.head, &b.members, &b.impls))
            .and_modify(|best| {
                if rank(b) < rank(best) {
                    *best = b;
                }
            })
            .or_insert(b);
    }
    let mut out = String::from(HEADER);
    for b in &blocks {
        let path = &b.path;
        if !path.contains("::") {
            out.push('\n');
        }
        match listed_at.get(&(&b.head[..], &b.members[..], &b.impls[..])) {
            Some(canonical) if canonical.path != b.path => {
                out.push_str(&format!("{path}: same as {}\n", canonical.path));
                continue;
            }
            _ => {}
        }
        out.push_str(&format!("{path}: {}\n", b.head));
        for Member { name, signature, .. } in &b.members {
            out.push_str(&format!("{path}::{name}: {signature}\n"));
        }
        for header in &b.impls {
            out.push_str(&format!("{path}: {header}\n"));
        }
    }
    out
}

/// What a module page lists.
#[derive(Debug, PartialEq)]
enum Entry {
    /// A `pub use` rustdoc did not inline: `name` is `*` for a glob.
    Reexport { name: String, text: String },
    /// An item with a page of its own (`kind` is rustdoc's: `mod`, `struct`, `fn`, `attr`, ...).
    Item { kind: String, name: String, href: String },
}

fn parse_module(page: &str) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    for (id, section) in sections(page).into_iter().skip(1) {
        let mut pos = 0;
        while let Some(tag) = next_tag(section, pos) {
            pos = tag.end;
            if tag.name != "dt" {
                continue;
            }
            let (inner, end) = inner_until(section, pos, "</dt>").ok_or("a <dt> is not closed")?;
            pos = end;
            if id == "reexports" {
                let name = attr(tag.raw, "id").and_then(|i| i.strip_prefix("reexport.")).unwrap_or("*");
                out.push(Entry::Reexport { name: name.to_owned(), text: text(inner) });
                continue;
            }
            let link = next_tag(inner, 0).filter(|t| t.name == "a").ok_or_else(|| format!("no link in {inner}"))?;
            let (label, _) = inner_until(inner, link.end, "</a>").ok_or("a link is not closed")?;
            out.push(Entry::Item {
                kind: attr(link.raw, "class").unwrap_or_default().to_owned(),
                name: text(label),
                href: decode(attr(link.raw, "href").unwrap_or_default()),
            });
        }
    }
    Ok(out)
}

/// The item on `page` (the main content of a `struct.*.html`, `fn.*.html`, ... page), with an
/// empty path.
fn parse_item(kind: &str, name: &str, page: &str) -> Result<Block, String> {
    let mut sections = sections(page).into_iter();
    let (_, top) = sections.next().unwrap_or_default();
    let (decl, end) = inner_between(top, 0, "<pre class=\"rust item-decl\"><code>", "</code></pre>")
        .ok_or("no item declaration (<pre class=\"rust item-decl\">)")?;
    let mut head = text(decl);
    if matches!(kind, "struct" | "enum" | "union" | "trait") {
        head = summarize(&head);
    }
    if deprecated_after(top, end) {
        head = format!("#[deprecated] {head}");
    }
    let generic = head.contains(&format!("{name}<"));
    let mut block = Block { path: String::new(), order: 0, head, members: Vec::new(), impls: Vec::new() };
    for (id, section) in sections {
        match id {
            "fields" => {
                for piece in pieces(section) {
                    if let Piece::Field { id, signature, deprecated } = piece {
                        let name = id.strip_prefix("structfield.").unwrap_or(&id);
                        block.members.push(Member::new(
                            Rank::Field,
                            name,
                            format!("{}pub {signature}", mark(deprecated)),
                        ));
                    }
                }
            }
            "variants" => {
                let mut variants: Vec<(String, String, Vec<String>)> = Vec::new();
                for piece in pieces(section) {
                    match piece {
                        Piece::Code { id, signature, deprecated, .. } => {
                            let name = member_name(&id).to_owned();
                            variants.push((name, format!("{}{signature}", mark(deprecated)), Vec::new()));
                        }
                        Piece::Field { id, signature, .. } => {
                            // `variant.<name>.field.<field>`, after its variant.
                            if let Some(last) =
                                variants.last_mut().filter(|v| id.starts_with(&format!("variant.{}.", v.0)))
                            {
                                last.2.push(signature);
                            }
                        }
                        Piece::Impl(_) => {}
                    }
                }
                for (name, signature, fields) in variants {
                    let signature =
                        if fields.is_empty() { signature } else { format!("{signature} {{ {} }}", fields.join(", ")) };
                    block.members.push(Member::new(Rank::Field, &name, signature));
                }
            }
            "implementations" => {
                let mut header = String::new();
                for piece in pieces(section) {
                    match piece {
                        Piece::Impl(h) => header = h,
                        Piece::Code { id, signature, deprecated, .. } => {
                            let signature = format!("{}{signature}", mark(deprecated));
                            let signature = if header == format!("impl {name}") && !generic {
                                signature
                            } else {
                                format!("{header} {{ {signature} }}")
                            };
                            block.members.push(Member::new(rank(&id), member_name(&id), signature));
                        }
                        Piece::Field { .. } => {}
                    }
                }
            }
            // `StructuralPartialEq` is the compiler's marker for a derived `PartialEq`.
            "trait-implementations" => {
                block.impls.extend(impls(section).into_iter().filter(|i| !i.contains(" StructuralPartialEq for ")))
            }
            "foreign-impls" | "implementors" => block.impls.extend(impls(section)),
            "required-methods"
            | "provided-methods"
            | "required-associated-types"
            | "provided-associated-types"
            | "required-associated-consts"
            | "provided-associated-consts" => {
                for piece in pieces(section) {
                    if let Piece::Code { id, signature, deprecated, .. } = piece {
                        let end = if id.starts_with("method.") { " { ... }" } else { ";" };
                        let signature = format!("{}{signature}{end}", mark(deprecated));
                        block.members.push(Member::new(rank(&id), member_name(&id), signature));
                    }
                }
            }
            "dyn-compatibility" => {
                let (p, _) = inner_between(section, 0, "<p>", "</p>").unwrap_or_default();
                block.head = format!("{} // {}", block.head, text(p));
            }
            "synthetic-implementations" | "blanket-implementations" | "synthetic-implementors" | "aliased-type" => {}
            _ if id.starts_with("deref-methods") => {}
            _ => {
                return Err(format!(
                    "unknown rustdoc section `{id}`: teach xtask/src/public_api.rs whether it is public API"
                ))
            }
        }
    }
    Ok(block)
}

fn mark(deprecated: bool) -> &'static str {
    if deprecated {
        "#[deprecated] "
    } else {
        ""
    }
}

/// The impl headers of a section, each with its associated types and constants (the methods
/// of a trait implementation are the trait's).
fn impls(section: &str) -> Vec<String> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for piece in pieces(section) {
        match piece {
            Piece::Impl(header) => out.push((header, Vec::new())),
            Piece::Code { id, signature, .. } if !id.starts_with("method.") && !id.starts_with("tymethod.") => {
                if let Some(last) = out.last_mut() {
                    last.1.push(format!("{signature};"));
                }
            }
            _ => {}
        }
    }
    out.into_iter()
        .map(|(header, items)| if items.is_empty() { header } else { format!("{header} {{ {} }}", items.join(" ")) })
        .collect()
}

/// `method.name-2` → `name`.
fn member_name(id: &str) -> &str {
    let name = id.split_once('.').map_or(id, |(_, n)| n);
    match name.rsplit_once('-') {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => name,
    }
}

/// A piece of an item page section, in page order.
#[derive(Debug, PartialEq)]
enum Piece {
    /// An impl block's header.
    Impl(String),
    /// A method, associated item or variant: `<section id=...>` with a code header.
    Code { id: String, signature: String, deprecated: bool },
    /// A struct field (`structfield.x`) or a variant's field (`variant.V.field.x`).
    Field { id: String, signature: String, deprecated: bool },
}

fn pieces(section: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(tag) = next_tag(section, pos) {
        pos = tag.end;
        let id = attr(tag.raw, "id").unwrap_or_default();
        match tag.name {
            "section" => {
                let class = attr(tag.raw, "class").unwrap_or_default();
                let first = class.split_whitespace().next().unwrap_or_default();
                let heading = if matches!(first, "impl" | "variant") { "h3" } else { "h4" };
                let Some((code, end)) = inner_between(
                    section,
                    pos,
                    &format!("<{heading} class=\"code-header\">"),
                    &format!("</{heading}>"),
                ) else {
                    continue;
                };
                // The header must be this section's, not a later one's.
                if section[pos..].find("</section>").is_some_and(|close| pos + close < end) {
                    continue;
                }
                pos = end;
                let signature = text(code);
                if first == "impl" {
                    out.push(Piece::Impl(signature));
                } else {
                    let deprecated = deprecated_after(section, end);
                    out.push(Piece::Code { id: id.to_owned(), signature, deprecated });
                }
            }
            "span" if id.starts_with("structfield.") || (id.starts_with("variant.") && id.contains(".field.")) => {
                let Some((code, end)) = inner_between(section, pos, "<code>", "</code>") else { continue };
                pos = end;
                let deprecated = deprecated_after(section, end);
                out.push(Piece::Field { id: id.to_owned(), signature: text(code), deprecated });
            }
            _ => {}
        }
    }
    out
}

/// Whether rustdoc's deprecation notice follows the element that ended at `pos`.
fn deprecated_after(html: &str, pos: usize) -> bool {
    let mut rest = html[pos..].trim_start();
    for close in ["</h4>", "</h3>", "</section>", "</span>", "</pre>"] {
        rest = rest.strip_prefix(close).unwrap_or(rest).trim_start();
    }
    if !rest.starts_with("<span class=\"item-info\">") {
        return false;
    }
    let end = balanced_end(rest, "span").unwrap_or(rest.len());
    rest[..end].contains("class=\"stab deprecated\"")
}

/// `pub struct Foo<T> where T: X { pub a: T, /* private fields */ }` →
/// `pub struct Foo<T> where T: X { .., /* private fields */ }`: the members are listed on lines
/// of their own. Tuple and unit structs are kept as they are.
fn summarize(decl: &str) -> String {
    let Some(open) = body_start(decl) else { return decl.to_owned() };
    let Some(body) = decl[open + 1..].strip_suffix('}') else { return decl.to_owned() };
    let mut rest = body.to_owned();
    let mut parts = Vec::new();
    let mut notes = Vec::new();
    for (comment, note) in
        [("/* private fields */", "/* private fields */"), ("// some variants omitted", "/* some variants omitted */")]
    {
        if rest.contains(comment) {
            rest = rest.replace(comment, "");
            notes.push(note);
        }
    }
    if !rest.trim().is_empty() {
        parts.push("..");
    }
    parts.extend(notes);
    let head = decl[..open].trim_end();
    if parts.is_empty() {
        format!("{head} {{}}")
    } else {
        format!("{head} {{ {} }}", parts.join(", "))
    }
}

/// The byte index of the `{` that opens a declaration's body: the first one outside `<>`, `()`
/// and `[]` (an arrow's `>` closes nothing).
fn body_start(decl: &str) -> Option<usize> {
    let mut depth = 0i32;
    let mut prev = ' ';
    for (i, c) in decl.char_indices() {
        match c {
            '<' | '(' | '[' => depth += 1,
            '>' if prev == '-' || prev == '=' => {}
            '>' | ')' | ']' => depth -= 1,
            '{' if depth == 0 => return Some(i),
            _ => {}
        }
        prev = c;
    }
    None
}

/// The part of a page rustdoc renders for the item, without doc comments and scripts.
fn main_content(page: &str) -> String {
    let start = page.find("<section id=\"main-content\"").unwrap_or(0);
    let mut html = &page[start..];
    let mut out = String::with_capacity(html.len());
    loop {
        let doc = ["<div class=\"docblock", "<div class='docblock"].iter().filter_map(|p| html.find(p)).min();
        let script = html.find("<script");
        let (at, len) = match (doc, script) {
            (Some(d), Some(s)) if s < d => (s, html[s..].find("</script>").map(|e| e + "</script>".len())),
            (Some(d), _) => (d, balanced_end(&html[d..], "div")),
            (None, Some(s)) => (s, html[s..].find("</script>").map(|e| e + "</script>".len())),
            (None, None) => break,
        };
        out.push_str(&html[..at]);
        html = &html[at + len.unwrap_or(html.len() - at)..];
    }
    out.push_str(html);
    out
}

/// The page split at rustdoc's section headers (`<h2 id=.. class="..section-header">`):
/// (id, html) pairs, the first with the id "" for what comes before the first header.
fn sections(page: &str) -> Vec<(&str, &str)> {
    let mut starts = Vec::new();
    let mut pos = 0;
    while let Some(tag) = next_tag(page, pos) {
        pos = tag.end;
        let is_section = attr(tag.raw, "class").is_some_and(|c| c.split_whitespace().any(|w| w == "section-header"));
        if tag.name == "h2" && is_section {
            starts.push((attr(tag.raw, "id").unwrap_or_default(), tag.start));
        }
    }
    let mut out = Vec::with_capacity(starts.len() + 1);
    let mut prev = ("", 0);
    for (id, start) in starts {
        out.push((prev.0, &page[prev.1..start]));
        prev = (id, start);
    }
    out.push((prev.0, &page[prev.1..]));
    out
}

/// A start or end tag: `raw` is what is between `<` and `>`; `name` is lowercase, with a
/// leading `/` for an end tag.
#[derive(Debug)]
struct Tag<'a> {
    start: usize,
    end: usize,
    name: &'a str,
    raw: &'a str,
}

fn next_tag(html: &str, from: usize) -> Option<Tag<'_>> {
    let start = from + html.get(from..)?.find('<')?;
    let mut quote = None;
    for (i, c) in html[start + 1..].char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '>') => {
                let raw = &html[start + 1..start + 1 + i];
                let name_end = raw.find(|c: char| c.is_whitespace() || c == '>').unwrap_or(raw.len());
                let name = raw[..name_end].trim_end_matches('/');
                return Some(Tag { start, end: start + i + 2, name, raw });
            }
            _ => {}
        }
    }
    None
}

/// The value of attribute `name` in a tag's `raw` text (entities not decoded).
fn attr<'a>(raw: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = raw;
    while let Some(i) = rest.find(name) {
        let before = rest[..i].chars().next_back();
        let after = &rest[i + name.len()..];
        if before.is_some_and(char::is_whitespace) {
            if let Some(value) = after.strip_prefix('=') {
                let quote = value.chars().next()?;
                if quote == '"' || quote == '\'' {
                    let value = &value[1..];
                    return value.find(quote).map(|end| &value[..end]);
                }
                return Some(value.split(char::is_whitespace).next().unwrap_or_default());
            }
        }
        rest = after;
    }
    None
}

/// The html after the first `open` at or after `from` up to the next `close`, and the index
/// after `close`.
fn inner_between<'a>(html: &'a str, from: usize, open: &str, close: &str) -> Option<(&'a str, usize)> {
    let start = from + html.get(from..)?.find(open)? + open.len();
    inner_until(html, start, close)
}

fn inner_until<'a>(html: &'a str, start: usize, close: &str) -> Option<(&'a str, usize)> {
    let len = html.get(start..)?.find(close)?;
    Some((&html[start..start + len], start + len + close.len()))
}

/// The length of the element `html` starts with, nested elements of the same name included.
fn balanced_end(html: &str, name: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut pos = 0;
    while let Some(tag) = next_tag(html, pos) {
        pos = tag.end;
        if tag.name == name && !tag.raw.ends_with('/') {
            depth += 1;
        } else if tag.name.strip_prefix('/') == Some(name) {
            depth = depth.checked_sub(1)?;
            if depth == 0 {
                return Some(pos);
            }
        }
    }
    None
}

/// The text of an html fragment as one line: tags stripped (and with them the `ⓘ` of notable
/// traits and the `Show N fields` of long declarations), entities decoded, whitespace collapsed,
/// and the line breaks rustdoc puts into long signatures undone (`fn f(\n    a: A,\n)` →
/// `fn f(a: A)`, a `where` block's trailing comma dropped).
fn text(html: &str) -> String {
    let mut out = String::new();
    let mut pos = 0;
    while let Some(tag) = next_tag(html, pos) {
        out.push_str(&decode(&html[pos..tag.start]));
        pos = tag.end;
        let skip_to = match tag.name {
            "summary" => Some("</summary>"),
            "a" if attr(tag.raw, "class") == Some("tooltip") => Some("</a>"),
            _ => None,
        };
        if let Some(close) = skip_to {
            pos = html[pos..].find(close).map_or(html.len(), |i| pos + i + close.len());
            continue;
        }
        match tag.name {
            "div" | "br" | "p" => out.push(' '),
            "/div" | "/p" => {
                out.truncate(out.trim_end().len());
                if out.ends_with(',') {
                    out.pop();
                }
                out.push(' ');
            }
            _ => {}
        }
    }
    out.push_str(&decode(&html[pos..]));
    let out = out.split_whitespace().collect::<Vec<_>>().join(" ");
    out.replace("( ", "(").replace(", )", ")").replace(" )", ")")
}

fn decode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let tail = &rest[amp + 1..];
        let entity = tail.find(';').filter(|&i| i <= 10).and_then(|i| Some((entity(&tail[..i])?, i)));
        match entity {
            Some((c, i)) => {
                out.push(c);
                rest = &tail[i + 1..];
            }
            None => {
                out.push('&');
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    out
}

fn entity(name: &str) -> Option<char> {
    match name {
        "lt" => Some('<'),
        "gt" => Some('>'),
        "amp" => Some('&'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        "nbsp" => Some(' '),
        _ => {
            let number = name.strip_prefix('#')?;
            let code = match number.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => number.parse().ok()?,
            };
            char::from_u32(code)
        }
    }
}

/// Lines removed (`-`) and added (`+`) from `old` to `new`, in order, with `@@ line N @@`
/// before each run of changes (N: the line in `new`).
fn diff(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..].iter().rev().zip(b[prefix..].iter().rev()).take_while(|(x, y)| x == y).count();
    let (a_mid, b_mid) = (&a[prefix..a.len() - suffix], &b[prefix..b.len() - suffix]);
    // (line in new, sign, text)
    let mut changes: Vec<(usize, char, &str)> = Vec::new();
    if a_mid.len().saturating_mul(b_mid.len()) <= 16_000_000 {
        // Longest common subsequence, walked from the front.
        let (n, m) = (a_mid.len(), b_mid.len());
        let mut lcs = vec![0u32; (n + 1) * (m + 1)];
        for i in (0..n).rev() {
            for j in (0..m).rev() {
                lcs[i * (m + 1) + j] = if a_mid[i] == b_mid[j] {
                    lcs[(i + 1) * (m + 1) + j + 1] + 1
                } else {
                    lcs[(i + 1) * (m + 1) + j].max(lcs[i * (m + 1) + j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < n || j < m {
            if i < n && j < m && a_mid[i] == b_mid[j] {
                i += 1;
                j += 1;
            } else if i < n && (j == m || lcs[(i + 1) * (m + 1) + j] >= lcs[i * (m + 1) + j + 1]) {
                changes.push((prefix + j, '-', a_mid[i]));
                i += 1;
            } else {
                changes.push((prefix + j, '+', b_mid[j]));
                j += 1;
            }
        }
    } else {
        // Too big to align: what is only in one of them.
        let count = |lines: &[&str]| {
            let mut c: BTreeMap<String, usize> = BTreeMap::new();
            for l in lines {
                *c.entry((*l).to_owned()).or_default() += 1;
            }
            c
        };
        let (in_a, in_b) = (count(a_mid), count(b_mid));
        changes.extend(a_mid.iter().filter(|l| in_b.get(**l) < in_a.get(**l)).map(|l| (prefix, '-', *l)));
        changes.extend(b_mid.iter().filter(|l| in_a.get(**l) < in_b.get(**l)).map(|l| (prefix, '+', *l)));
    }
    let mut out = String::new();
    // Where the next change would be if it continued the current run.
    let mut next = None;
    for (line, sign, text) in changes {
        if next != Some(line) {
            out.push_str(&format!("@@ line {} @@\n", line + 1));
        }
        next = Some(if sign == '+' { line + 1 } else { line });
        out.push_str(&format!("{sign}{text}\n"));
    }
    out
}

#[cfg(test)]
mod tests;
