// make-cases.js: expected ids for the components the three fixture tokenizers
// do not use, made by the Hugging Face tokenizers library (Rust 0.22, through
// @anush008/tokenizers).  Each variant replaces parts of Mistral's
// tokenizer.json ($SPRUCE_FIXTURES/tokenizers/mistral) and lists the library's
// ids and decoded text for a few strings; tests/test_tokenizer applies the same
// replacement and compares.  Regenerate with
//   NODE_PATH=/tmp/hf/node_modules node tests/data/tokenizer/make-cases.js \
//       $SPRUCE_FIXTURES/tokenizers/mistral/tokenizer.json > tests/data/tokenizer/variants.json
const { Tokenizer } = require('@anush008/tokenizers');
const fs = require('fs');
const base = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const texts = [
  'Hello World, 2024 is HERE!  Tabs\there;  ok?',
  '  leading and trailing spaces  ',
  'İstanbul ÀÉÎ ﬁne Ⅻ ① x²',
  'snake_case foo-bar (a+b)*c 12345 3.14',
  'The <mask> token and <mask>here and  <mask>  end',
  'single <w> word x<w>y <w>',
  '日本語のテキスト and émojis 😀👍',
  '',
];
const sp = (type, extra) => Object.assign({ type }, extra || {});
const variants = [
  { name: 'metaspace-always', pre_tokenizer: sp('Metaspace', { replacement: '▁', prepend_scheme: 'always', split: true }), normalizer: null, decoder: sp('Metaspace', { replacement: '▁', prepend_scheme: 'always', split: true }) },
  { name: 'metaspace-first-nosplit', pre_tokenizer: sp('Metaspace', { replacement: '▁', prepend_scheme: 'first', split: false }), normalizer: null, decoder: sp('Metaspace', { replacement: '▁', prepend_scheme: 'first', split: false }) },
  { name: 'metaspace-never', pre_tokenizer: sp('Metaspace', { replacement: '▁', prepend_scheme: 'never', split: true }), normalizer: null },
  { name: 'whitespace', pre_tokenizer: sp('Whitespace'), normalizer: null },
  { name: 'whitespacesplit-lowercase', pre_tokenizer: sp('WhitespaceSplit'), normalizer: sp('Lowercase') },
  { name: 'digits-punct', pre_tokenizer: sp('Sequence', { pretokenizers: [sp('Digits', { individual_digits: true }), sp('Punctuation', { behavior: 'Isolated' })] }), normalizer: sp('Replace', { pattern: { String: ' ' }, content: '▁' }) },
  { name: 'digits-contiguous', pre_tokenizer: sp('Digits', { individual_digits: false }), normalizer: null },
  { name: 'nfkc-strip', normalizer: sp('Sequence', { normalizers: [sp('NFKC'), sp('Strip', { strip_left: true, strip_right: true }), sp('Replace', { pattern: { Regex: '\\s+' }, content: '▁' })] }) },
  { name: 'nfd-split-removed', normalizer: sp('NFD'), pre_tokenizer: sp('Split', { pattern: { String: ' ' }, behavior: 'Removed', invert: false }) },
  { name: 'split-merged-prev', normalizer: null, pre_tokenizer: sp('Split', { pattern: { Regex: '\\s+' }, behavior: 'MergedWithPrevious', invert: false }) },
  { name: 'split-merged-next', normalizer: null, pre_tokenizer: sp('Split', { pattern: { Regex: '\\s+' }, behavior: 'MergedWithNext', invert: false }) },
  { name: 'split-contiguous-invert', normalizer: null, pre_tokenizer: sp('Split', { pattern: { Regex: '\\p{L}' }, behavior: 'Contiguous', invert: true }) },
  { name: 'bytelevel-regex', normalizer: null, pre_tokenizer: sp('ByteLevel', { add_prefix_space: true, trim_offsets: true, use_regex: true }), decoder: sp('ByteLevel', { add_prefix_space: true, trim_offsets: true, use_regex: true }) },
  { name: 'added-strip-single-word', added: [
      { id: 32000, content: '<mask>', single_word: false, lstrip: true, rstrip: true, normalized: false, special: true },
      { id: 32001, content: '<w>', single_word: true, lstrip: false, rstrip: false, normalized: false, special: false },
      { id: 32002, content: 'World', single_word: false, lstrip: false, rstrip: false, normalized: true, special: false } ] },
];
const out = [];
(async () => {
  for (const v of variants) {
    const j = JSON.parse(JSON.stringify(base));
    const over = {};
    for (const k of ['normalizer', 'pre_tokenizer', 'decoder'])
      if (k in v) { j[k] = v[k]; over[k] = v[k]; }
    if (v.added) { j.added_tokens = j.added_tokens.concat(v.added); over.added_tokens_extra = v.added; }
    const tok = Tokenizer.fromString(JSON.stringify(j));
    const cases = [];
    for (const text of texts) {
      const ids = (await tok.encode(text, null, { addSpecialTokens: false })).getIds();
      const decoded = await tok.decode(ids, false);
      cases.push({ text, ids, decoded });
    }
    out.push({ name: v.name, replace: over, cases });
  }
  process.stdout.write(JSON.stringify(out, null, 1) + '\n');
})();
