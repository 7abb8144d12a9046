// The generator's seeded sampling in the browser, draw for draw as pipeline.deploy.predict does
// it (pipeline/kinds/generator_spec.py `pick`, `generate`): numpy's default_rng(seed), that is
// SeedSequence -> PCG64 -> random(), and Generator.choice(p=...) (the CDF, normalised by its last
// value, searched on the right). BigInt carries PCG64's 128-bit state.
//
// The draws are numpy's exactly (tests/test_web_sampling.py). The characters are Python's as
// long as the model's outputs are: onnxruntime-web and onnxruntime differ in the last digits,
// which moves a character only when a draw falls that close to a boundary of the CDF.

const M32 = 0xffffffffn;
const M64 = (1n << 64n) - 1n;
const M128 = (1n << 128n) - 1n;
const [INIT_A, MULT_A, INIT_B, MULT_B] = [0x43b0d7e5n, 0x931e8875n, 0x8b51f9ddn, 0x58f38dedn];
const [MIX_MULT_L, MIX_MULT_R] = [0xca01f9ddn, 0x4973f715n];
const POOL_SIZE = 4;
const PCG_MULT = (2549297995355413924n << 64n) + 4865540595714422341n;

// numpy.random.SeedSequence(seed).generate_state(words, uint32), for a non-negative integer seed
export function seedSequenceState(seed, words) {
  let entropy = [];
  let value = BigInt(seed);
  do { entropy.push(value & M32); value >>= 32n; } while (value > 0n);
  let hashConst = INIT_A;
  const hashmix = (v) => {
    v = (v ^ hashConst) & M32;
    hashConst = (hashConst * MULT_A) & M32;
    v = (v * hashConst) & M32;
    return (v ^ (v >> 16n)) & M32;
  };
  const mix = (x, y) => {
    let r = (MIX_MULT_L * x - MIX_MULT_R * y) & M32;
    return (r ^ (r >> 16n)) & M32;
  };
  const pool = [];
  for (let i = 0; i < POOL_SIZE; i++) pool.push(hashmix(i < entropy.length ? entropy[i] : 0n));
  for (let src = 0; src < POOL_SIZE; src++) {
    for (let dst = 0; dst < POOL_SIZE; dst++) if (src !== dst) pool[dst] = mix(pool[dst], hashmix(pool[src]));
  }
  for (let src = POOL_SIZE; src < entropy.length; src++) {
    for (let dst = 0; dst < POOL_SIZE; dst++) pool[dst] = mix(pool[dst], hashmix(entropy[src]));
  }
  const state = [];
  let hashB = INIT_B;
  for (let i = 0; i < words; i++) {
    let v = (pool[i % POOL_SIZE] ^ hashB) & M32;
    hashB = (hashB * MULT_B) & M32;
    v = (v * hashB) & M32;
    state.push((v ^ (v >> 16n)) & M32);
  }
  return state;
}

// numpy.random.default_rng(seed): PCG64 seeded from SeedSequence(seed)
export class NumpyRandom {
  constructor(seed) {
    const w = seedSequenceState(seed, 8);
    const u64 = (i) => w[2 * i] | (w[2 * i + 1] << 32n);   // little-endian pairs of uint32
    const initState = (u64(0) << 64n) | u64(1);
    const initSeq = (u64(2) << 64n) | u64(3);
    this.inc = ((initSeq << 1n) | 1n) & M128;
    this.state = 0n;
    this.step();
    this.state = (this.state + initState) & M128;
    this.step();
  }

  step() { this.state = (this.state * PCG_MULT + this.inc) & M128; }

  next64() {   // XSL-RR on the stepped state
    this.step();
    const rot = Number(this.state >> 122n);
    const x = ((this.state >> 64n) ^ this.state) & M64;
    return ((x >> BigInt(rot)) | (x << BigInt((64 - rot) % 64))) & M64;
  }

  random() { return Number(this.next64() >> 11n) / 9007199254740992; }

  // Generator.choice(p.length, p=p)
  choice(p) {
    const cdf = new Float64Array(p.length);
    let total = 0;
    for (let i = 0; i < p.length; i++) { total += p[i]; cdf[i] = total; }
    const last = cdf[p.length - 1];
    for (let i = 0; i < p.length; i++) cdf[i] /= last;
    const u = this.random();
    let lo = 0, hi = p.length;   // the first index whose cdf > u
    while (lo < hi) { const mid = (lo + hi) >> 1; if (cdf[mid] > u) hi = mid; else lo = mid + 1; }
    return lo;
  }
}

// numpy's sum of a float64 array: pairwise, in blocks of 8 below 128 elements
function numpySum(a, start = 0, n = a.length) {
  if (n < 8) { let s = 0; for (let i = 0; i < n; i++) s += a[start + i]; return s; }
  if (n <= 128) {
    const r = new Float64Array(8);
    for (let j = 0; j < 8; j++) r[j] = a[start + j];
    let i = 8;
    for (; i < n - (n % 8); i += 8) for (let j = 0; j < 8; j++) r[j] += a[start + i + j];
    let s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; i++) s += a[start + i];
    return s;
  }
  let half = n >> 1;
  half -= half % 8;
  return numpySum(a, start, half) + numpySum(a, start + half, n - half);
}

// pick(logits, temperature, rng, top_k) of generator_spec.py
export function pick(logits, temperature, rng, topK = null) {
  let x = Float64Array.from(logits);
  if (temperature === 0) return x.indexOf(Math.max(...x));
  if (topK !== null && topK < x.length) {
    const cutoff = Float64Array.from(x).sort()[x.length - topK];
    x = x.map((v) => (v < cutoff ? -Infinity : v));
  }
  x = x.map((v) => v / temperature);
  const max = Math.max(...x);
  const shifted = x.map((v) => v - max);
  const logSum = Math.log(numpySum(shifted.map(Math.exp)));
  const probabilities = shifted.map((v) => Math.exp(v - logSum));
  const total = numpySum(probabilities);
  return rng.choice(probabilities.map((v) => v / total));
}
