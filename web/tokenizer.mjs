// The labelled-texts tokenizer in the browser: reads the tokenizer.json that prepare writes
// (Hugging Face `tokenizers`, WordLevel; pipeline/data/texts/__init__.py `new_tokenizer`) and
// gives the same token ids as Python, for either level (words or characters).
//
// What makes it exact (tests/test_web_tokenizer.py holds it to Python on an adversarial corpus):
// - the patterns are Oniguruma's, whose \w is Unicode (letters, marks, decimal and letter
//   numbers (Nd, Nl: 〇 and Ⅻ are word characters, ፹ is not), connector punctuation) and \s
//   the White_Space property; JavaScript's \w is ASCII and its \s another set (it takes U+FEFF,
//   not U+0085), so both are spelt out as property classes;
// - `tokenizers` lowercases one character at a time, so a final capital sigma becomes σ,
//   where String.prototype.toLowerCase would write ς;
// - WhitespaceSplit splits on White_Space, and Split(..., "isolated") keeps the text between
//   matches as tokens of their own;
// - the special tokens ([PAD], [UNK]) written literally in a text are those tokens: `tokenizers`
//   cuts them out of the raw text before it normalizes the rest.

const WORD = "\\p{L}\\p{M}\\p{Nd}\\p{Nl}\\p{Pc}";
const SPACE = "\\p{White_Space}";
const OUTSIDE = { w: `[${WORD}]`, W: `[^${WORD}]`, s: SPACE, S: "\\P{White_Space}", d: "\\p{Nd}", D: "\\P{Nd}" };
const INSIDE = { w: WORD, s: SPACE, S: "\\P{White_Space}", d: "\\p{Nd}" };

// An Oniguruma pattern of the kind the tokenizer holds, as a JavaScript RegExp with the u flag.
export function translatePattern(pattern) {
  let out = "";
  let inClass = false;
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === "\\") {
      const next = pattern[++i];
      const table = inClass ? INSIDE : OUTSIDE;
      if (next in table) out += table[next];
      else if (/[A-Za-z]/.test(next) && !"tnrfvbB".includes(next)) {
        throw new Error(`unsupported escape \\${next} in ${pattern}`);
      } else out += "\\" + next;
      continue;
    }
    if (c === "[" && !inClass) inClass = true;
    else if (c === "]" && inClass) inClass = false;
    else if (c === "/" && !inClass) { out += "\\/"; continue; }
    out += c;
  }
  return out;
}

function regexOf(spec) {
  if (spec.Regex !== undefined) return new RegExp(translatePattern(spec.Regex), "gu");
  return new RegExp(spec.String.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&"), "gu");
}

function normalizer(spec) {
  if (spec === null) return (s) => s;
  switch (spec.type) {
    case "Sequence": {
      const steps = spec.normalizers.map(normalizer);
      return (s) => steps.reduce((t, step) => step(t), s);
    }
    case "Replace": { const re = regexOf(spec.pattern); return (s) => s.replace(re, () => spec.content); }
    case "NFKC": return (s) => s.normalize("NFKC");
    case "NFC": return (s) => s.normalize("NFC");
    case "Lowercase": return (s) => Array.from(s, (c) => c.toLowerCase()).join("");
    default: throw new Error(`unsupported normalizer ${spec.type}`);
  }
}

function isolated(re, piece) {
  const parts = [];
  let last = 0;
  for (const match of piece.matchAll(re)) {
    if (match.index > last) parts.push(piece.slice(last, match.index));
    if (match[0].length) parts.push(match[0]);
    last = match.index + match[0].length;
  }
  if (last < piece.length) parts.push(piece.slice(last));
  return parts;
}

function preTokenizer(spec) {
  if (spec === null) return (s) => [s];
  switch (spec.type) {
    case "Sequence": {
      const steps = spec.pretokenizers.map(preTokenizer);
      return (s) => steps.reduce((pieces, step) => pieces.flatMap(step), [s]);
    }
    case "WhitespaceSplit": return (s) => s.split(/\p{White_Space}+/u).filter((p) => p.length);
    case "Split": {
      if (spec.behavior !== "Isolated" || spec.invert) throw new Error(`unsupported Split ${spec.behavior}`);
      const re = regexOf(spec.pattern);
      return (s) => isolated(re, s);
    }
    default: throw new Error(`unsupported pre-tokenizer ${spec.type}`);
  }
}

// tokenizer.json (parsed) -> {encode(text) -> ids, tokens(text) -> strings}
export function loadTokenizer(spec) {
  if (spec.model.type !== "WordLevel") throw new Error(`unsupported model ${spec.model.type}`);
  const vocab = new Map(Object.entries(spec.model.vocab));
  const unk = vocab.get(spec.model.unk_token);
  const normalize = normalizer(spec.normalizer);
  const split = preTokenizer(spec.pre_tokenizer);
  const truncation = spec.truncation;
  const specials = (spec.added_tokens || []).map((t) => {
    if (t.normalized || t.lstrip || t.rstrip || t.single_word) throw new Error(`unsupported added token ${t.content}`);
    return t.content;
  }).sort((a, b) => b.length - a.length);
  const cut = specials.length
    ? new RegExp(specials.map((c) => c.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")).join("|"), "gu") : null;
  const tokens = (text) => (cut ? isolated(cut, text) : [text]).flatMap(
    (part) => (specials.includes(part) ? [part] : split(normalize(part))));
  const encode = (text) => {
    let ids = tokens(text).map((t) => (vocab.has(t) ? vocab.get(t) : unk));
    if (truncation && ids.length > truncation.max_length) {
      ids = truncation.direction === "Left" ? ids.slice(ids.length - truncation.max_length)
                                            : ids.slice(0, truncation.max_length);
    }
    return ids;
  };
  return { tokens, encode, padId: spec.padding ? spec.padding.pad_id : 0 };
}
