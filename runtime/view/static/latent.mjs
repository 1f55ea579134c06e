// A seed's latent in the browser, bit for bit what the Python side draws (runtime/latents.py):
// numpy.random.default_rng(seed).standard_normal(n).astype(float32). Three parts of numpy's stream,
// each written from its definition: SeedSequence (the seed's 32-bit words hashed into a 128-bit pool,
// then into the generator's state), PCG64 (a 128-bit LCG with the XSL-RR output, in BigInt), and the
// 256-layer ziggurat of random_standard_normal with its exponential tail (tables in ziggurat.mjs).
import { FI, KI, WI } from "./ziggurat.mjs";

// -- SeedSequence: 32-bit arithmetic; Math.imul multiplies mod 2^32, >>> 0 reads the result unsigned
const POOL_SIZE = 4;
const INIT_A = 0x43b0d7e5, MULT_A = 0x931e8875, INIT_B = 0x8b51f9dd, MULT_B = 0x58f38ded;
const MIX_MULT_L = 0xca01f9dd, MIX_MULT_R = 0x4973f715, XSHIFT = 16;

/** A non-negative integer seed -> its 32-bit words, lowest first ([0] for 0). */
export function seedWords(seed) {
  let n = BigInt(seed);
  if (n < 0n) throw new RangeError(`seeds are non-negative integers, got ${seed}`);
  const words = [];
  do {
    words.push(Number(n & 0xffffffffn));
    n >>= 32n;
  } while (n > 0n);
  return words;
}

function hashmix(value, hash) {  // hash: [multiplier], advanced in place
  value = (value ^ hash[0]) >>> 0;
  hash[0] = Math.imul(hash[0], MULT_A) >>> 0;
  value = Math.imul(value, hash[0]) >>> 0;
  return (value ^ (value >>> XSHIFT)) >>> 0;
}

function mix(x, y) {
  const result = (Math.imul(MIX_MULT_L, x) - Math.imul(MIX_MULT_R, y)) >>> 0;  // |difference| < 2^33: exact
  return (result ^ (result >>> XSHIFT)) >>> 0;
}

/** SeedSequence(seed).pool: the seed's words hashed and mixed into four 32-bit words. */
export function entropyPool(seed) {
  const entropy = seedWords(seed), pool = new Array(POOL_SIZE), hash = [INIT_A];
  for (let i = 0; i < POOL_SIZE; i++) pool[i] = hashmix(i < entropy.length ? entropy[i] : 0, hash);
  for (let src = 0; src < POOL_SIZE; src++) {
    for (let dst = 0; dst < POOL_SIZE; dst++) {
      if (src !== dst) pool[dst] = mix(pool[dst], hashmix(pool[src], hash));
    }
  }
  for (let src = POOL_SIZE; src < entropy.length; src++) {  // seeds beyond 128 bits
    for (let dst = 0; dst < POOL_SIZE; dst++) pool[dst] = mix(pool[dst], hashmix(entropy[src], hash));
  }
  return pool;
}

/** SeedSequence(seed).generate_state(n, uint64) as BigInts: 2n 32-bit words, paired low word first. */
export function generateState(seed, n) {
  const pool = entropyPool(seed), words = [];
  let hash = INIT_B;
  for (let i = 0; i < 2 * n; i++) {
    let value = (pool[i % POOL_SIZE] ^ hash) >>> 0;
    hash = Math.imul(hash, MULT_B) >>> 0;
    value = Math.imul(value, hash) >>> 0;
    words.push((value ^ (value >>> XSHIFT)) >>> 0);
  }
  const out = [];
  for (let i = 0; i < n; i++) out.push(BigInt(words[2 * i]) | (BigInt(words[2 * i + 1]) << 32n));
  return out;
}

// -- PCG64: state' = state * MULT + inc (mod 2^128); output XSL-RR of the new state
const MASK64 = (1n << 64n) - 1n, MASK128 = (1n << 128n) - 1n;
const MULT = (0x2360ed051fc65da4n << 64n) | 0x4385df649fccf645n;

export class PCG64 {
  /** Seeded as numpy's PCG64(SeedSequence(seed)) is. */
  constructor(seed) {
    const [s0, s1, i0, i1] = generateState(seed, 4);
    const initState = (s0 << 64n) | s1, initSeq = (i0 << 64n) | i1;
    this.inc = ((initSeq << 1n) | 1n) & MASK128;
    this.state = 0n;
    this.step();
    this.state = (this.state + initState) & MASK128;
    this.step();
  }

  step() {
    this.state = (this.state * MULT + this.inc) & MASK128;
  }

  /** The next 64 random bits, a BigInt. */
  next64() {
    this.step();
    const s = this.state, rot = s >> 122n;
    const x = ((s >> 64n) ^ s) & MASK64;
    return ((x >> rot) | (x << ((64n - rot) & 63n))) & MASK64;
  }

  /** A double in [0, 1) from the top 53 bits. */
  nextDouble() {
    return Number(this.next64() >> 11n) * (1.0 / 9007199254740992.0);
  }
}

// -- the ziggurat: 8 bits pick a layer, 1 the sign, 52 the magnitude
const R = 3.6541528853610087963519472518;  // where the tail starts
const INV_R = 0.27366123732975827203338247596;  // 1 / R

/** One standard normal draw, as numpy's random_standard_normal makes it. */
export function standardNormal(rng) {
  for (;;) {
    let r = rng.next64();
    const idx = Number(r & 0xffn);
    r >>= 8n;
    const negative = (r & 1n) === 1n;
    const rabs = Number((r >> 1n) & 0xfffffffffffffn);  // < 2^52: exact as a Number
    let x = rabs * WI[idx];
    if (negative) x = -x;
    if (rabs < KI[idx]) return x;  // inside the layer's rectangle: most draws end here
    if (idx === 0) {  // the tail beyond R, by Marsaglia's exponential rejection
      for (;;) {
        const xx = -INV_R * Math.log1p(-rng.nextDouble());
        const yy = -Math.log1p(-rng.nextDouble());
        if (yy + yy > xx * xx) return Math.floor(rabs / 256) % 2 ? -(R + xx) : R + xx;  // bit 8 of rabs (>> would cut to 32 bits)
      }
    }
    if ((FI[idx - 1] - FI[idx]) * rng.nextDouble() + FI[idx] < Math.exp(-0.5 * x * x)) return x;
  }
}

/** The latent of a seed: numpy.random.default_rng(seed).standard_normal(n) as float32. */
export function latentForSeed(seed, n) {
  const rng = new PCG64(seed), z = new Float32Array(n);
  for (let i = 0; i < n; i++) z[i] = standardNormal(rng);  // Float32Array stores round to nearest, as astype does
  return z;
}
