//! The scraper against snippets in the shape of rustdoc's (1.95) HTML, abridged.

use super::*;

fn item(kind: &str, name: &str, body: &str) -> Block {
    let page = main_content(&format!(
        "<html><body><nav>x</nav><section id=\"main-content\" class=\"content\">{body}</section></body></html>"
    ));
    parse_item(kind, name, &page).unwrap()
}

fn lines(block: &Block) -> Vec<String> {
    let mut out = vec![block.head.clone()];
    out.extend(block.members.iter().map(|m| format!("{}: {}", m.name, m.signature)));
    out.extend(block.impls.iter().cloned());
    out
}

#[test]
fn text_strips_tags_decodes_entities_and_joins_wrapped_signatures() {
    let html = "pub async fn <a href=\"#method.publish\" class=\"fn\">publish</a>&lt;T&gt;(\n    &amp;self,\n    \
                topic: &amp;<a class=\"primitive\" href=\"https://doc.rust-lang.org/1.95.0/std/primitive.str.html\">str</a>,\n) \
                -&gt; <a class=\"enum\" href=\"x\" title=\"enum core::result::Result\">Result</a>&lt;<a class=\"struct\">Entry<wbr>Id</a>, \
                E&gt;<div class=\"where\">where\n    T: <a class=\"trait\">Serialize</a> + ?<a class=\"trait\">Sized</a>,</div>";
    assert_eq!(
        text(html),
        "pub async fn publish<T>(&self, topic: &str) -> Result<EntryId, E> where T: Serialize + ?Sized"
    );
    // The notable-traits marker, a long declaration's toggle, a numeric entity.
    assert_eq!(
        text("fn <a class=\"fn\">clone</a>(&amp;self) -&gt; Unit <a href=\"#\" class=\"tooltip\" data-notable-ty=\"Unit\">ⓘ</a>"),
        "fn clone(&self) -> Unit"
    );
    assert_eq!(
        text("<div class=\"code-attribute\">#[non_exhaustive]</div>pub struct S {<details class=\"toggle type-contents-toggle\"><summary class=\"hideme\"><span>Show 13 fields</span></summary>\n    pub a: &#39;static str,\n</details>}"),
        "#[non_exhaustive] pub struct S { pub a: 'static str, }"
    );
    // Unknown or unterminated entities stay as they are.
    assert_eq!(text("a &amp;&amp; b &unknown; &"), "a && b &unknown; &");
}

#[test]
fn declarations_keep_their_header_and_say_what_is_hidden() {
    assert_eq!(
        summarize("pub struct Producer<C = MsgPack> where C: Codec { /* private fields */ }"),
        "pub struct Producer<C = MsgPack> where C: Codec { /* private fields */ }"
    );
    assert_eq!(
        summarize("pub struct A<'a, T: Clone> { pub x: &'a T, /* private fields */ }"),
        "pub struct A<'a, T: Clone> { .., /* private fields */ }"
    );
    assert_eq!(
        summarize("#[non_exhaustive] pub struct S { pub a: u64, pub b: u64, }"),
        "#[non_exhaustive] pub struct S { .. }"
    );
    assert_eq!(
        summarize("pub enum E { A = 1, B, // some variants omitted }"),
        "pub enum E { .., /* some variants omitted */ }"
    );
    assert_eq!(summarize("pub enum Never {}"), "pub enum Never {}");
    assert_eq!(
        summarize("pub struct F<G> where G: Fn() -> Option<u8> { /* private fields */ }"),
        "pub struct F<G> where G: Fn() -> Option<u8> { /* private fields */ }"
    );
    assert_eq!(
        summarize("pub trait Codec: Debug + Send + 'static { // Required method fn encode(&self) -> Vec<u8>; }"),
        "pub trait Codec: Debug + Send + 'static { .. }"
    );
    // Tuple and unit structs as they are.
    assert_eq!(summarize("pub struct Tuple(pub u64, _);"), "pub struct Tuple(pub u64, _);");
    assert_eq!(summarize("pub struct Unit;"), "pub struct Unit;");
}

#[test]
fn a_module_page_lists_reexports_and_items() {
    let page = r##"<section id="main-content" class="content"><div class="main-heading"><h1>Crate <span>probe</span></h1></div><details class="toggle top-doc" open><summary class="hideme"><span>Expand description</span></summary><div class="docblock"><p>Docs with a <dt>term</dt>.</p><div class="example-wrap"><pre class="rust rust-example-rendered"><code>x</code></pre></div></div></details><h2 id="reexports" class="section-header">Re-exports<a href="#reexports" class="anchor">§</a></h2><dl class="item-table reexports"><dt id="reexport.Renamed"><code>pub use a::<a class="struct" href="a/struct.Inner.html" title="struct probe::a::Inner">Inner</a> as Renamed;</code></dt><dt><code>pub use <a class="mod" href="a/index.html" title="mod probe::a">a</a>::*;</code></dt><dt id="reexport.fred"><code>pub use tributary_core::fred;</code></dt></dl><h2 id="modules" class="section-header">Modules<a href="#modules" class="anchor">§</a></h2><dl class="item-table"><dt><a class="mod" href="dead_letter/index.html" title="mod probe::dead_letter">dead_<wbr>letter</a></dt><dd>Dead letters: <code>&lt;ns&gt;</code>.</dd></dl><h2 id="structs" class="section-header">Structs<a href="#structs" class="anchor">§</a></h2><dl class="item-table"><dt><a class="struct" href="struct.DeadLetter.html" title="struct probe::DeadLetter">Dead<wbr>Letter</a></dt><dd>One dead letter.</dd></dl><h2 id="functions" class="section-header">Functions<a href="#functions" class="anchor">§</a></h2><dl class="item-table"><dt class="deprecated"><a class="fn" href="fn.oldf.html" title="fn probe::oldf">oldf</a><wbr><span class="stab deprecated" title="">Deprecated</span></dt><dd>Old fn.</dd></dl><h2 id="attributes" class="section-header">Attribute Macros<a href="#attributes" class="anchor">§</a></h2><dl class="item-table"><dt><a class="attr" href="attr.handler.html" title="attr probe::handler">handler</a></dt></dl><script type="text/json" id="notable-traits-data">{"<dt>":"<section id=\"x\">"}</script></section>"##;
    let entries = parse_module(&main_content(page)).unwrap();
    let item =
        |kind: &str, name: &str, href: &str| Entry::Item { kind: kind.into(), name: name.into(), href: href.into() };
    assert_eq!(
        entries,
        [
            Entry::Reexport { name: "Renamed".into(), text: "pub use a::Inner as Renamed;".into() },
            Entry::Reexport { name: "*".into(), text: "pub use a::*;".into() },
            Entry::Reexport { name: "fred".into(), text: "pub use tributary_core::fred;".into() },
            item("mod", "dead_letter", "dead_letter/index.html"),
            item("struct", "DeadLetter", "struct.DeadLetter.html"),
            item("fn", "oldf", "fn.oldf.html"),
            item("attr", "handler", "attr.handler.html"),
        ]
    );
}

/// A struct page: a generic type with an inherent impl of its own and one for the default
/// parameter, a deprecated method, trait implementations with an associated type; methods from
/// `Deref`, auto-trait and blanket implementations left out.
const STRUCT_PAGE: &str = r##"<div class="main-heading"><div class="rustdoc-breadcrumbs"><a href="index.html">probe</a></div><h1>Struct <span class="struct">Producer</span>&nbsp;<button id="copy-path" title="Copy item path to clipboard">Copy item path</button></h1><rustdoc-toolbar></rustdoc-toolbar><span class="sub-heading"><a class="src" href="../src/probe/producer.rs.html#53">Source</a> </span></div><pre class="rust item-decl"><code>pub struct Producer&lt;C = <a class="struct" href="struct.MsgPack.html" title="struct probe::MsgPack">MsgPack</a>&gt;<div class="where">where
    C: <a class="trait" href="trait.Codec.html" title="trait probe::Codec">Codec</a>,</div>{
    pub name: <a class="struct">String</a>,
    <span class="comment">/* private fields */</span>
}</code></pre><details class="toggle top-doc" open><summary class="hideme"><span>Expand description</span></summary><div class="docblock"><p>Publishes.</p>
<h2 id="example"><a class="doc-anchor" href="#example">§</a>Example</h2><div class="example-wrap"><pre class="rust rust-example-rendered"><code><span class="kw">let </span>p = <span class="number">1</span>;</code></pre></div></div></details><h2 id="fields" class="fields section-header">Fields<a href="#fields" class="anchor">§</a></h2><span id="structfield.name" class="structfield section-header"><a href="#structfield.name" class="anchor field">§</a><code>name: <a class="struct">String</a></code></span><div class="docblock"><p>The name.</p></div><h2 id="implementations" class="section-header">Implementations<a href="#implementations" class="anchor">§</a></h2><div id="implementations-list"><details class="toggle implementors-toggle" open><summary><section id="impl-Producer" class="impl"><a class="src rightside" href="../src/probe/producer.rs.html#94">Source</a><a href="#impl-Producer" class="anchor">§</a><h3 class="code-header">impl <a class="struct" href="struct.Producer.html" title="struct probe::Producer">Producer</a></h3></section></summary><div class="impl-items"><details class="toggle method-toggle" open><summary><section id="method.new" class="method"><a class="src rightside" href="../src/probe/producer.rs.html#96">Source</a><h4 class="code-header">pub fn <a href="#method.new" class="fn">new</a>(conn: <a class="struct">Connection</a>) -&gt; <a class="struct">Producer</a></h4></section></summary><div class="docblock"><p>Default settings.</p></div></details></div></details><details class="toggle implementors-toggle" open><summary><section id="impl-Producer%3CC%3E" class="impl"><a class="src rightside" href="../src/probe/producer.rs.html#193">Source</a><a href="#impl-Producer%3CC%3E" class="anchor">§</a><h3 class="code-header">impl&lt;C&gt; <a class="struct">Producer</a>&lt;C&gt;<div class="where">where
    C: <a class="trait">Codec</a>,</div></h3></section></summary><div class="impl-items"><details class="toggle" open><summary><section id="associatedconstant.MAX" class="associatedconstant"><a class="src rightside">Source</a><h4 class="code-header">pub const <a href="#associatedconstant.MAX" class="constant">MAX</a>: <a class="primitive">usize</a> = 3</h4></section></summary><div class="docblock"><p>Max.</p></div></details><details class="toggle method-toggle deprecated" open><summary><section id="method.publish_old" class="method"><a class="src rightside">Source</a><h4 class="code-header">pub fn <a href="#method.publish_old" class="fn">publish_old</a>(&amp;self)</h4></section><span class="item-info"><div class="stab deprecated"><span class="emoji">👎</span><span>Deprecated since 0.2.0: use publish</span></div></span></summary><div class="docblock"><p>Old.</p></div></details><details class="toggle method-toggle" open><summary><section id="method.publish" class="method"><a class="src rightside">Source</a><h4 class="code-header">pub async fn <a href="#method.publish" class="fn">publish</a>&lt;T&gt;(
    &amp;self,
    topic: &amp;<a class="primitive">str</a>,
    message: <a class="primitive">&amp;T</a>,
) -&gt; <a class="enum">Result</a>&lt;<a class="struct">EntryId</a>, <a class="enum">StreamError</a>&gt;<div class="where">where
    T: <a class="trait">Serialize</a> + ?<a class="trait">Sized</a>,</div></h4></section></summary><div class="docblock"><p>Publishes.</p></div></details></div></details></div><details class="toggle big-toggle" open><summary><h2 id="deref-methods-Client" class="section-header"><span>Methods from <a class="trait">Deref</a>&lt;Target = Client&gt;</span><a href="#deref-methods-Client" class="anchor">§</a></h2></summary><div id="deref-methods-Client-1" class="impl-items"><details class="toggle method-toggle" open><summary><section id="method.ping" class="method"><h4 class="code-header">pub fn <a href="#method.ping" class="fn">ping</a>(&amp;self)</h4></section></summary></details></div></details><h2 id="trait-implementations" class="section-header">Trait Implementations<a href="#trait-implementations" class="anchor">§</a></h2><div id="trait-implementations-list"><details class="toggle implementors-toggle" open><summary><section id="impl-Clone-for-Producer%3CC%3E" class="impl"><a class="src rightside">Source</a><a href="#impl-Clone-for-Producer%3CC%3E" class="anchor">§</a><h3 class="code-header">impl&lt;C&gt; <a class="trait">Clone</a> for <a class="struct">Producer</a>&lt;C&gt;<div class="where">where
    C: <a class="trait">Clone</a> + <a class="trait">Codec</a>,</div></h3></section></summary><div class="impl-items"><details class="toggle method-toggle" open><summary><section id="method.clone" class="method trait-impl"><a class="src rightside">Source</a><a href="#method.clone" class="anchor">§</a><h4 class="code-header">fn <a class="fn">clone</a>(&amp;self) -&gt; <a class="struct">Producer</a>&lt;C&gt;</h4></section></summary><div class='docblock'>Returns a duplicate of the value. <a href="x">Read more</a></div></details><details class="toggle method-toggle" open><summary><section id="method.clone_from" class="method trait-impl"><span class="rightside"><span class="since">1.0.0</span> · <a class="src">Source</a></span><a href="#method.clone_from" class="anchor">§</a><h4 class="code-header">fn <a class="fn">clone_from</a>(&amp;mut self, source: &amp;Self)</h4></section></summary><div class='docblock'>Performs copy-assignment. <a href="x">Read more</a></div></details></div></details><details class="toggle implementors-toggle" open><summary><section id="impl-Deref-for-Producer" class="impl"><a href="#impl-Deref-for-Producer" class="anchor">§</a><h3 class="code-header">impl <a class="trait">Deref</a> for <a class="struct">Producer</a></h3></section></summary><div class="impl-items"><details class="toggle" open><summary><section id="associatedtype.Target" class="associatedtype trait-impl"><a href="#associatedtype.Target" class="anchor">§</a><h4 class="code-header">type <a class="associatedtype">Target</a> = Client</h4></section></summary><div class='docblock'>The resulting type after dereferencing.</div></details><details class="toggle method-toggle" open><summary><section id="method.deref" class="method trait-impl"><h4 class="code-header">fn <a class="fn">deref</a>(&amp;self) -&gt; &amp;Client</h4></section></summary></details></div></details><section id="impl-StructuralPartialEq-for-Producer" class="impl"><h3 class="code-header">impl <a class="trait">StructuralPartialEq</a> for <a class="struct">Producer</a></h3></section></div><h2 id="synthetic-implementations" class="section-header">Auto Trait Implementations<a href="#synthetic-implementations" class="anchor">§</a></h2><div id="synthetic-implementations-list"><section id="impl-Send-for-Producer%3CC%3E" class="impl"><a href="#impl-Send-for-Producer%3CC%3E" class="anchor">§</a><h3 class="code-header">impl&lt;C&gt; <a class="trait">Send</a> for <a class="struct">Producer</a>&lt;C&gt;</h3></section></div><h2 id="blanket-implementations" class="section-header">Blanket Implementations<a href="#blanket-implementations" class="anchor">§</a></h2><div id="blanket-implementations-list"><details class="toggle implementors-toggle"><summary><section id="impl-Any-for-T" class="impl"><a class="src rightside">Source</a><a href="#impl-Any-for-T" class="anchor">§</a><h3 class="code-header">impl&lt;T&gt; <a class="trait">Any</a> for T<div class="where">where
    T: 'static + ?<a class="trait">Sized</a>,</div></h3></section></summary><div class="impl-items"><details class="toggle method-toggle" open><summary><section id="method.type_id" class="method trait-impl"><a class="src rightside">Source</a><a href="#method.type_id" class="anchor">§</a><h4 class="code-header">fn <a class="fn">type_id</a>(&amp;self) -&gt; <a class="struct">TypeId</a></h4></section></summary><div class='docblock'>Gets the <code>TypeId</code> of <code>self</code>. <a href="x">Read more</a></div></details></div></details></div><script src="../trait.impl/x.js" async></script>"##;

#[test]
fn a_struct_page_lists_fields_methods_in_their_impl_and_trait_implementations() {
    assert_eq!(
        lines(&item("struct", "Producer", STRUCT_PAGE)),
        [
            "pub struct Producer<C = MsgPack> where C: Codec { .., /* private fields */ }",
            "name: pub name: String",
            // A generic type's methods are shown in their impl block, `impl Producer` included.
            "new: impl Producer { pub fn new(conn: Connection) -> Producer }",
            "MAX: impl<C> Producer<C> where C: Codec { pub const MAX: usize = 3 }",
            "publish_old: impl<C> Producer<C> where C: Codec { #[deprecated] pub fn publish_old(&self) }",
            "publish: impl<C> Producer<C> where C: Codec { pub async fn publish<T>(&self, topic: &str, message: &T) \
             -> Result<EntryId, StreamError> where T: Serialize + ?Sized }",
            "impl<C> Clone for Producer<C> where C: Clone + Codec",
            "impl Deref for Producer { type Target = Client; }",
        ]
    );
}

#[test]
fn a_plain_type_s_methods_are_shown_without_their_impl_block() {
    let page = r##"<pre class="rust item-decl"><code>pub struct Worker { <span class="comment">/* private fields */</span> }</code></pre><span class="item-info"><div class="stab deprecated"><span class="emoji">👎</span><span>Deprecated</span></div></span><h2 id="implementations" class="section-header">Implementations</h2><div id="implementations-list"><details class="toggle implementors-toggle" open><summary><section id="impl-Worker" class="impl"><h3 class="code-header">impl <a class="struct">Worker</a></h3></section></summary><div class="impl-items"><details class="toggle method-toggle" open><summary><section id="method.builder" class="method"><h4 class="code-header">pub fn <a href="#method.builder" class="fn">builder</a>(conn: <a class="struct">Connection</a>, group: &amp;<a class="primitive">str</a>) -&gt; <a class="struct">WorkerBuilder</a></h4></section></summary></details></div></details><details class="toggle implementors-toggle" open><summary><section id="impl-Worker-1" class="impl"><h3 class="code-header">impl <a class="struct">Worker</a></h3></section></summary><div class="impl-items"><details class="toggle method-toggle" open><summary><section id="method.builder-1" class="method"><h4 class="code-header">pub unsafe fn <a href="#method.builder-1" class="fn">builder</a>()</h4></section></summary></details></div></details></div>"##;
    assert_eq!(
        lines(&item("struct", "Worker", page)),
        [
            "#[deprecated] pub struct Worker { /* private fields */ }",
            "builder: pub fn builder(conn: Connection, group: &str) -> WorkerBuilder",
            // A repeated id gets a `-N` suffix; the name is the method's.
            "builder: pub unsafe fn builder()",
        ]
    );
}

#[test]
fn an_enum_page_lists_variants_with_their_fields() {
    let page = r##"<pre class="rust item-decl"><code><div class="code-attribute">#[non_exhaustive]</div>pub enum StreamError {
    Redis(<a class="struct">RedisError</a>),
    Encode {
        topic: <a class="struct">String</a>,
        source: <a class="enum">CodecError</a>,
    },
    A = 1,
    <span class="comment">// some variants omitted</span>
}</code></pre><details class="toggle top-doc" open><summary class="hideme"><span>Expand description</span></summary><div class="docblock"><p>Errors.</p></div></details><h2 id="variants" class="variants section-header">Variants (Non-exhaustive)<a href="#variants" class="anchor">§</a></h2><details class="toggle non-exhaustive"><summary class="hideme"><span>This enum is marked as non-exhaustive</span></summary><div class="docblock">Non-exhaustive enums could have additional variants added in future.</div></details><div class="variants"><section id="variant.Redis" class="variant"><a href="#variant.Redis" class="anchor">§</a><h3 class="code-header">Redis(<a class="struct">RedisError</a>)</h3></section><div class="docblock"><p>Redis failed.</p></div><section id="variant.Encode" class="variant"><a href="#variant.Encode" class="anchor">§</a><h3 class="code-header">Encode</h3></section><span class="item-info"><div class="stab deprecated"><span>Deprecated</span></div></span><div class="docblock"><p>Encoding failed.</p></div><div class="sub-variant" id="variant.Encode.fields"><h4>Fields</h4><div class="sub-variant-field"><span id="variant.Encode.field.topic" class="section-header"><a href="#variant.Encode.field.topic" class="anchor field">§</a><code>topic: <a class="struct">String</a></code></span></div><div class="sub-variant-field"><span id="variant.Encode.field.source" class="section-header"><a href="#variant.Encode.field.source" class="anchor field">§</a><code>source: <a class="enum">CodecError</a></code></span></div></div><section id="variant.A" class="variant"><a href="#variant.A" class="anchor">§</a><h3 class="code-header">A = 1</h3></section></div><h2 id="implementations" class="section-header">Implementations<a href="#implementations" class="anchor">§</a></h2><div id="implementations-list"><details class="toggle implementors-toggle" open><summary><section id="impl-StreamError" class="impl"><h3 class="code-header">impl <a class="enum">StreamError</a></h3></section></summary><div class="impl-items"><details class="toggle method-toggle" open><summary><section id="method.kind" class="method"><h4 class="code-header">pub fn <a href="#method.kind" class="fn">kind</a>(&amp;self) -&gt; <a class="enum">ErrorKind</a></h4></section></summary></details></div></details></div><h2 id="trait-implementations" class="section-header">Trait Implementations</h2><div id="trait-implementations-list"><details class="toggle implementors-toggle" open><summary><section id="impl-From%3CRedisError%3E-for-StreamError" class="impl"><h3 class="code-header">impl <a class="trait">From</a>&lt;<a class="struct">RedisError</a>&gt; for <a class="enum">StreamError</a></h3></section></summary></details></div>"##;
    assert_eq!(
        lines(&item("enum", "StreamError", page)),
        [
            "#[non_exhaustive] pub enum StreamError { .., /* some variants omitted */ }",
            "Redis: Redis(RedisError)",
            "Encode: #[deprecated] Encode { topic: String, source: CodecError }",
            "A: A = 1",
            "kind: pub fn kind(&self) -> ErrorKind",
            "impl From<RedisError> for StreamError",
        ]
    );
}

#[test]
fn a_trait_page_lists_required_and_provided_items_and_implementors() {
    let page = r##"<pre class="rust item-decl"><code>pub trait Tr: <a class="trait">Send</a> {
    type <a href="#associatedtype.T" class="associatedtype">T</a>: <a class="trait">Clone</a>;

    const <a href="#associatedconstant.D" class="constant">D</a>: <a class="primitive">u8</a> = 1;

    // Required method
    fn <a href="#tymethod.req" class="fn">req</a>(&amp;self) -&gt; Self::<a class="associatedtype" href="trait.Tr.html#associatedtype.T">T</a>;

    // Provided method
    fn <a href="#method.prov" class="fn">prov</a>(&amp;self) { ... }
}</code></pre><h2 id="provided-associated-consts" class="section-header">Provided Associated Constants<a href="#provided-associated-consts" class="anchor">§</a></h2><div class="methods"><details class="toggle" open><summary><section id="associatedconstant.D" class="method"><h4 class="code-header">const <a href="#associatedconstant.D" class="constant">D</a>: <a class="primitive">u8</a> = 1</h4></section></summary></details></div><h2 id="required-associated-types" class="section-header">Required Associated Types<a href="#required-associated-types" class="anchor">§</a></h2><div class="methods"><details class="toggle" open><summary><section id="associatedtype.T" class="method"><h4 class="code-header">type <a href="#associatedtype.T" class="associatedtype">T</a>: <a class="trait">Clone</a></h4></section></summary></details></div><h2 id="required-methods" class="section-header">Required Methods<a href="#required-methods" class="anchor">§</a></h2><div class="methods"><details class="toggle method-toggle" open><summary><section id="tymethod.req" class="method"><h4 class="code-header">fn <a href="#tymethod.req" class="fn">req</a>(&amp;self) -&gt; Self::<a class="associatedtype">T</a></h4></section></summary></details></div><h2 id="provided-methods" class="section-header">Provided Methods<a href="#provided-methods" class="anchor">§</a></h2><div class="methods"><details class="toggle method-toggle" open><summary><section id="method.prov" class="method"><h4 class="code-header">fn <a href="#method.prov" class="fn">prov</a>(&amp;self)</h4></section></summary></details></div><h2 id="dyn-compatibility" class="section-header">Dyn Compatibility<a href="#dyn-compatibility" class="anchor">§</a></h2><div class="dyn-compatibility-info"><p>This trait is <b>not</b> <a href="https://doc.rust-lang.org/1.95.0/reference/items/traits.html#dyn-compatibility">dyn compatible</a>.</p><p><i>In older versions of Rust, dyn compatibility was called "object safety", so this trait is not object safe.</i></p></div><h2 id="foreign-impls" class="section-header">Implementations on Foreign Types<a href="#foreign-impls" class="anchor">§</a></h2><details class="toggle implementors-toggle"><summary><section id="impl-Tr-for-Arc%3CH%3E" class="impl"><h3 class="code-header">impl&lt;H&gt; <a class="trait">Tr</a> for <a class="struct">Arc</a>&lt;H&gt;<div class="where">where
    H: <a class="trait">Tr</a> + ?<a class="trait">Sized</a>,</div></h3></section></summary><div class="impl-items"><section id="method.req" class="method trait-impl"><h4 class="code-header">fn <a href="#tymethod.req" class="fn">req</a>(&amp;self) -&gt; H::T</h4></section><section id="associatedtype.T-1" class="associatedtype trait-impl"><h4 class="code-header">type <a href="#associatedtype.T" class="associatedtype">T</a> = H::T</h4></section></div></details><h2 id="implementors" class="section-header">Implementors<a href="#implementors" class="anchor">§</a></h2><div id="implementors-list"><div class="negative-marker"></div><details class="toggle implementors-toggle"><summary><section id="impl-Tr-for-Unit" class="impl"><h3 class="code-header">impl <a class="trait" href="trait.Tr.html">Tr</a> for <a class="struct" href="struct.Unit.html">Unit</a></h3></section></summary><div class="impl-items"><section id="associatedconstant.D-1" class="associatedconstant trait-impl"><h4 class="code-header">const <a href="#associatedconstant.D" class="constant">D</a>: <a class="primitive">u8</a> = 2</h4></section><section id="associatedtype.T-2" class="associatedtype trait-impl"><h4 class="code-header">type <a href="#associatedtype.T" class="associatedtype">T</a> = <a class="primitive">u8</a></h4></section></div></details></div><script src="../trait.impl/probe/trait.Tr.js" async></script>"##;
    assert_eq!(
        lines(&item("trait", "Tr", page)),
        [
            "pub trait Tr: Send { .. } // This trait is not dyn compatible.",
            "D: const D: u8 = 1;",
            "T: type T: Clone;",
            "req: fn req(&self) -> Self::T;",
            "prov: fn prov(&self) { ... }",
            "impl<H> Tr for Arc<H> where H: Tr + ?Sized { type T = H::T; }",
            "impl Tr for Unit { const D: u8 = 2; type T = u8; }",
        ]
    );
}

#[test]
fn other_items_are_their_declaration() {
    let decl = |kind: &str, name: &str, code: &str| {
        item(kind, name, &format!("<pre class=\"rust item-decl\"><code>{code}</code></pre><details class=\"toggle top-doc\" open><summary class=\"hideme\"><span>Expand description</span></summary><div class=\"docblock\"><p>Doc.</p></div></details>")).head
    };
    assert_eq!(decl("attr", "handler", "#[handler]"), "#[handler]");
    assert_eq!(
        decl("macro", "m", "macro_rules! m {\n    ($x:expr) =&gt; { ... };\n    () =&gt; { ... };\n}"),
        "macro_rules! m { ($x:expr) => { ... }; () => { ... }; }"
    );
    assert_eq!(
        decl("constant", "K", "pub const K: &amp;<a class=\"primitive\">str</a> = \"k\";"),
        "pub const K: &str = \"k\";"
    );
    assert_eq!(
        decl("type", "BoxFuture", "pub type BoxFuture&lt;T&gt; = <a class=\"struct\">Pin</a>&lt;<a class=\"struct\">Box</a>&lt;dyn <a class=\"trait\">Future</a>&lt;Output = T&gt; + <a class=\"trait\">Send</a>&gt;&gt;;"),
        "pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;"
    );
    // A type alias's "Aliased Type" section is the aliased type's, not the alias's.
    let alias = item("type", "Al", "<pre class=\"rust item-decl\"><code>pub type Al&lt;T&gt; = Vec&lt;T&gt;;</code></pre><h2 id=\"aliased-type\" class=\"section-header\">Aliased Type</h2><pre class=\"rust item-decl\"><code>pub struct Al&lt;T&gt; { /* private fields */ }</code></pre>");
    assert_eq!(lines(&alias), ["pub type Al<T> = Vec<T>;"]);
}

#[test]
fn an_unknown_section_or_a_missing_declaration_is_an_error() {
    let page = "<pre class=\"rust item-decl\"><code>pub struct S;</code></pre><h2 id=\"new-stuff\" class=\"section-header\">New</h2>";
    assert!(parse_item("struct", "S", page).unwrap_err().contains("`new-stuff`"));
    assert!(parse_item("struct", "S", "<h1>Struct S</h1>").unwrap_err().contains("no item declaration"));
}

#[test]
fn doc_comments_are_removed_with_what_they_nest() {
    let page = "<body><section id=\"main-content\"><div class=\"docblock\"><div class=\"example-wrap\"><div>x</div></div><h2 id=\"a\" class=\"section-header\">fake</h2></div>kept<script>if (a < b) {}</script><div class='docblock'>y</div>end</section></body>";
    assert_eq!(main_content(page), "<section id=\"main-content\">keptend</section></body>");
}

fn block(path: &str, order: usize, head: &str, members: &[(&str, &str)], impls: &[&str]) -> Block {
    Block {
        path: path.into(),
        order,
        head: head.into(),
        members: members.iter().map(|(n, s)| Member::new(Rank::Method, n, (*s).into())).collect(),
        impls: impls.iter().map(|i| (*i).into()).collect(),
    }
}

#[test]
fn the_listing_is_sorted_and_says_once_what_several_paths_share() {
    let producer = |path: &str, order| {
        block(
            path,
            order,
            "pub struct Producer { /* private fields */ }",
            &[("publish", "pub fn publish(&self)"), ("new", "pub fn new() -> Producer")],
            &["impl Debug for Producer", "impl Clone for Producer"],
        )
    };
    let blocks = vec![
        block("tributary_streams", 2, "crate tributary_streams", &[], &[]),
        producer("tributary_streams::Producer", 2),
        block("tributary", 0, "crate tributary", &[], &[]),
        producer("tributary::prelude::Producer", 0),
        block("tributary::prelude", 0, "pub mod prelude", &[], &[]),
        producer("tributary::Producer", 0),
        // One-line items are printed at every path.
        block("tributary::prelude::redact_url", 0, "pub fn redact_url(url: &str) -> String", &[], &[]),
        block("tributary::redact_url", 0, "pub fn redact_url(url: &str) -> String", &[], &[]),
    ];
    let listing = render(blocks);
    let body = listing.strip_prefix(HEADER).unwrap();
    assert_eq!(
        body,
        "
tributary: crate tributary
tributary::Producer: pub struct Producer { /* private fields */ }
tributary::Producer::new: pub fn new() -> Producer
tributary::Producer::publish: pub fn publish(&self)
tributary::Producer: impl Clone for Producer
tributary::Producer: impl Debug for Producer
tributary::prelude: pub mod prelude
tributary::prelude::Producer: same as tributary::Producer
tributary::prelude::redact_url: pub fn redact_url(url: &str) -> String
tributary::redact_url: pub fn redact_url(url: &str) -> String

tributary_streams: crate tributary_streams
tributary_streams::Producer: same as tributary::Producer
"
    );
    assert!(HEADER.lines().all(|l| l.starts_with('#')));
}

#[test]
fn members_are_ordered_by_kind_then_name() {
    let mut b = block("p::S", 0, "pub struct S { .. }", &[], &[]);
    b.members = vec![
        Member::new(Rank::Method, "a", "pub fn a()".into()),
        Member::new(Rank::Const, "Z", "pub const Z: u8".into()),
        Member::new(Rank::Field, "z", "pub z: u8".into()),
        Member::new(Rank::Field, "b", "pub b: u8".into()),
    ];
    let listing = render(vec![b]);
    let names: Vec<&str> = listing
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split(": ").next()?.rsplit("::").next())
        .collect();
    assert_eq!(names, ["S", "b", "z", "Z", "a"]);
}

#[test]
fn the_diff_shows_removed_and_added_lines_where_they_are() {
    let old = "# h\na\nb\nc\nd\ne\n";
    let new = "# h\na\nB\nc\nd\ne\nf\n";
    assert_eq!(diff(old, new), "@@ line 3 @@\n-b\n+B\n@@ line 7 @@\n+f\n");
    assert_eq!(diff("", "x\n"), "@@ line 1 @@\n+x\n");
    assert_eq!(diff("x\ny\n", "y\n"), "@@ line 1 @@\n-x\n");
    assert_eq!(diff("same\n", "same\n"), "");
}

#[test]
fn helpers() {
    assert_eq!(member_name("method.publish"), "publish");
    assert_eq!(member_name("method.new-1"), "new");
    assert_eq!(member_name("associatedtype.T-12"), "T");
    assert_eq!(member_name("variant.A"), "A");
    assert_eq!(attr(r#"a class="fn" href="fn.f.html""#, "href"), Some("fn.f.html"));
    assert_eq!(attr(r#"div data-id="x" id='y'"#, "id"), Some("y"));
    assert_eq!(attr(r#"div class="c""#, "id"), None);
    assert_eq!(decode("&lt;&#39;a&#x27;&gt;&nbsp;&amp;"), "<'a'> &");
    let args = doc_args();
    assert_eq!(&args[..3], ["doc", "--no-deps", "--all-features"]);
    assert!(CRATES.iter().all(|(p, _)| args.contains(p)));
}
