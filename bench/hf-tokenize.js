// hf-tokenize.js TOKENIZER_JSON TEXT_FILE [REPEATS]: encode throughput of the
// Hugging Face tokenizers library (Rust, through the @anush008/tokenizers
// Node bindings) on one text, without special tokens, best of REPEATS runs.
// Prints "ids seconds load_seconds".  Needs NODE_PATH to hold the package.
const { Tokenizer } = require('@anush008/tokenizers');
const fs = require('fs');
(async () => {
  const [tokPath, textPath, reps] = process.argv.slice(2);
  const text = fs.readFileSync(textPath, 'utf8');
  let t0 = process.hrtime.bigint();
  const tok = Tokenizer.fromFile(tokPath);
  const load = Number(process.hrtime.bigint() - t0) / 1e9;
  let best = Infinity, n = 0;
  for (let r = 0; r < Number(reps || 3); r++) {
    t0 = process.hrtime.bigint();
    const enc = await tok.encode(text, null, { addSpecialTokens: false });
    const dt = Number(process.hrtime.bigint() - t0) / 1e9;
    n = enc.getIds().length;
    if (dt < best) best = dt;
  }
  console.log(`${n} ${best} ${load}`);
})();
