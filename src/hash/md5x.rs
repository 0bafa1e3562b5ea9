//! Many MD5s at once: the MD5 of several messages computed side by side, one per lane of the
//! CPU's vector registers (16 lanes with AVX-512, 8 with AVX2, 8 with SSE2 in two registers of
//! 4; on aarch64, 8 with NEON in two registers of 4). MD5 is a chain of dependent steps, so one
//! message keeps a core mostly waiting; independent blocks hashed in lanes run several times
//! faster per core (measured on x86; the NEON kernels are checked under qemu, not timed on ARM
//! hardware). Checked against the `md-5` crate in the tests.

/// An MD5 digest.
type Hash = [u8; 16];
use md5::block_api::compress as compress_one;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The most lanes any kernel has.
pub const MAX_LANES: usize = 16;

const INIT: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// The sine table of RFC 1321.
const K: [u32; 64] = [
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
];

/// Each round's rotations, which repeat every four steps.
const SHIFTS: [[u32; 4]; 4] = [
    [7, 12, 17, 22],
    [5, 9, 14, 20],
    [4, 11, 16, 23],
    [6, 10, 15, 21],
];

/// The message word each of a round's 16 steps adds.
const WORDS: [[usize; 16]; 4] = {
    let mut t = [[0usize; 16]; 4];
    let mut j = 0;
    while j < 16 {
        t[0][j] = j;
        t[1][j] = (5 * j + 1) % 16;
        t[2][j] = (3 * j + 5) % 16;
        t[3][j] = (7 * j) % 16;
        j += 1;
    }
    t
};

/// Defines kernels, one per name with its number of groups: `chunks` 64-byte chunks of each of
/// `$w * $groups` lanes through the MD5 compression, lane `l` reading chunk `k` at
/// `data[l][64 * k..]`. A vector holds `$w` lanes;
/// `$groups` vectors of independent lanes are interleaved, so that one group's steps fill the
/// time another waits for its previous step. `$words` gives chunk `k` of the `$w` lanes at the
/// start of a slice as 16 vectors (word `j` of every lane in vector `j`); `$f`, `$g`, `$h`,
/// `$i` are the round functions and `$rotl` the rotation, as macros over vectors.
macro_rules! kernel {
    ([$($name:ident: $groups:literal),+], $feat:literal, $w:literal, $v:ty, $add:path,
     $set1:path, $load:path, $store:path, $words:ident, $f:ident, $g:ident, $h:ident, $i:ident,
     $rotl:ident) => {$(
        #[target_feature(enable = $feat)]
        pub unsafe fn $name(
            st: &mut [[u32; $w * $groups]; 4],
            data: &[&[u8]; $w * $groups],
            chunks: usize,
        ) {
            // SAFETY (for the block): the caller runs this only where the CPU has `$feat`;
            // loads and stores are unaligned ones of `$w` words within `[u32; $w * $groups]`.
            unsafe {
                let load = |row: &[u32; $w * $groups], g: usize| -> $v {
                    $load(row[g * $w..].as_ptr().cast())
                };
                let mut a: [$v; $groups] = std::array::from_fn(|g| load(&st[0], g));
                let mut b: [$v; $groups] = std::array::from_fn(|g| load(&st[1], g));
                let mut c: [$v; $groups] = std::array::from_fn(|g| load(&st[2], g));
                let mut d: [$v; $groups] = std::array::from_fn(|g| load(&st[3], g));
                for k in 0..chunks {
                    let w: [[$v; 16]; $groups] =
                        std::array::from_fn(|g| $words(&data[g * $w..], k));
                    let (a0, b0, c0, d0) = (a, b, c, d);
                    // Four steps with the round's four rotations, four times a round: one
                    // loop body per round keeps the kernel small.
                    macro_rules! step {
                        ($fun:ident, $r:expr, $k:expr, $t:expr, $a:ident, $b:ident, $c:ident, $d:ident) => {
                            for g in 0..$groups {
                                let x = $add(
                                    $add($a[g], $fun!($b[g], $c[g], $d[g])),
                                    $add($set1(K[16 * $r + $k] as i32), w[g][WORDS[$r][$k]]),
                                );
                                $a[g] = $add($b[g], $rotl!(x, SHIFTS[$r][$t]));
                            }
                        };
                    }
                    macro_rules! round {
                        ($fun:ident, $r:expr) => {
                            for q in 0..4 {
                                step!($fun, $r, 4 * q, 0, a, b, c, d);
                                step!($fun, $r, 4 * q + 1, 1, d, a, b, c);
                                step!($fun, $r, 4 * q + 2, 2, c, d, a, b);
                                step!($fun, $r, 4 * q + 3, 3, b, c, d, a);
                            }
                        };
                    }
                    round!($f, 0);
                    round!($g, 1);
                    round!($h, 2);
                    round!($i, 3);
                    for g in 0..$groups {
                        a[g] = $add(a[g], a0[g]);
                        b[g] = $add(b[g], b0[g]);
                        c[g] = $add(c[g], c0[g]);
                        d[g] = $add(d[g], d0[g]);
                    }
                }
                for (row, v) in st.iter_mut().zip([a, b, c, d]) {
                    for g in 0..$groups {
                        $store(row[g * $w..].as_mut_ptr().cast(), v[g]);
                    }
                }
            }
        }
    )+};
}

#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
mod x86 {
    use super::{K, SHIFTS, WORDS};
    #[cfg(target_arch = "x86")]
    use std::arch::x86::*;
    #[cfg(target_arch = "x86_64")]
    use std::arch::x86_64::*;

    /// Chunk `k` of each lane, 64 bytes at `64 * k` (the lanes are at least that long), as
    /// rows of 4-byte words.
    #[inline(always)]
    fn chunk(data: &[&[u8]], l: usize, k: usize) -> *const u8 {
        data[l][64 * k..64 * k + 64].as_ptr()
    }

    /// Transposes chunk `k` of the first 16 lanes: vector `j` holds word `j` of every lane.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn words16(data: &[&[u8]], k: usize) -> [__m512i; 16] {
        // SAFETY: `chunk` checked that each row's 64 bytes are there.
        let r: [__m512i; 16] =
            std::array::from_fn(|l| unsafe { _mm512_loadu_si512(chunk(data, l, k).cast()) });
        // Within each 128-bit lane: 4x4 blocks transposed (pairs of words, then of pairs).
        let mut t = [_mm512_setzero_si512(); 16];
        for p in (0..16).step_by(2) {
            t[p] = _mm512_unpacklo_epi32(r[p], r[p + 1]);
            t[p + 1] = _mm512_unpackhi_epi32(r[p], r[p + 1]);
        }
        // u[4g + q]: word 4i + q of rows 4g..4g+4, in 128-bit lane i.
        let mut u = [_mm512_setzero_si512(); 16];
        for g in 0..4 {
            let b = 4 * g;
            u[b] = _mm512_unpacklo_epi64(t[b], t[b + 2]);
            u[b + 1] = _mm512_unpackhi_epi64(t[b], t[b + 2]);
            u[b + 2] = _mm512_unpacklo_epi64(t[b + 1], t[b + 3]);
            u[b + 3] = _mm512_unpackhi_epi64(t[b + 1], t[b + 3]);
        }
        // Then the 128-bit lanes: word 4i + q gathers lane i of u[q], u[4 + q], u[8 + q],
        // u[12 + q].
        let mut w = [_mm512_setzero_si512(); 16];
        for q in 0..4 {
            let x_lo = _mm512_shuffle_i32x4::<0x88>(u[q], u[4 + q]);
            let x_hi = _mm512_shuffle_i32x4::<0xDD>(u[q], u[4 + q]);
            let y_lo = _mm512_shuffle_i32x4::<0x88>(u[8 + q], u[12 + q]);
            let y_hi = _mm512_shuffle_i32x4::<0xDD>(u[8 + q], u[12 + q]);
            w[q] = _mm512_shuffle_i32x4::<0x88>(x_lo, y_lo);
            w[8 + q] = _mm512_shuffle_i32x4::<0xDD>(x_lo, y_lo);
            w[4 + q] = _mm512_shuffle_i32x4::<0x88>(x_hi, y_hi);
            w[12 + q] = _mm512_shuffle_i32x4::<0xDD>(x_hi, y_hi);
        }
        w
    }

    /// Transposes chunk `k` of 8 lanes, as `words16` does with 16.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn words8(data: &[&[u8]], k: usize) -> [__m256i; 16] {
        let mut w = [_mm256_setzero_si256(); 16];
        for half in 0..2 {
            // SAFETY: `chunk` checked that each row's 64 bytes are there.
            let r: [__m256i; 8] = std::array::from_fn(|l| unsafe {
                _mm256_loadu_si256(chunk(data, l, k).add(32 * half).cast())
            });
            let mut t = [_mm256_setzero_si256(); 8];
            for p in (0..8).step_by(2) {
                t[p] = _mm256_unpacklo_epi32(r[p], r[p + 1]);
                t[p + 1] = _mm256_unpackhi_epi32(r[p], r[p + 1]);
            }
            let mut u = [_mm256_setzero_si256(); 8];
            for g in 0..2 {
                let b = 4 * g;
                u[b] = _mm256_unpacklo_epi64(t[b], t[b + 2]);
                u[b + 1] = _mm256_unpackhi_epi64(t[b], t[b + 2]);
                u[b + 2] = _mm256_unpacklo_epi64(t[b + 1], t[b + 3]);
                u[b + 3] = _mm256_unpackhi_epi64(t[b + 1], t[b + 3]);
            }
            for q in 0..4 {
                w[8 * half + q] = _mm256_permute2x128_si256::<0x20>(u[q], u[4 + q]);
                w[8 * half + 4 + q] = _mm256_permute2x128_si256::<0x31>(u[q], u[4 + q]);
            }
        }
        w
    }

    /// Transposes chunk `k` of 4 lanes, as `words16` does with 16.
    #[target_feature(enable = "sse2")]
    #[inline]
    fn words4(data: &[&[u8]], k: usize) -> [__m128i; 16] {
        let mut w = [_mm_setzero_si128(); 16];
        for quarter in 0..4 {
            // SAFETY: `chunk` checked that each row's 64 bytes are there.
            let r: [__m128i; 4] = std::array::from_fn(|l| unsafe {
                _mm_loadu_si128(chunk(data, l, k).add(16 * quarter).cast())
            });
            let t0 = _mm_unpacklo_epi32(r[0], r[1]);
            let t1 = _mm_unpackhi_epi32(r[0], r[1]);
            let t2 = _mm_unpacklo_epi32(r[2], r[3]);
            let t3 = _mm_unpackhi_epi32(r[2], r[3]);
            w[4 * quarter] = _mm_unpacklo_epi64(t0, t2);
            w[4 * quarter + 1] = _mm_unpackhi_epi64(t0, t2);
            w[4 * quarter + 2] = _mm_unpacklo_epi64(t1, t3);
            w[4 * quarter + 3] = _mm_unpackhi_epi64(t1, t3);
        }
        w
    }

    // AVX-512: rotations and the round functions are one instruction each.
    macro_rules! rotl512 {
        ($x:expr, $s:expr) => {
            _mm512_rol_epi32::<{ $s as i32 }>($x)
        };
    }
    macro_rules! f512 {
        ($b:expr, $c:expr, $d:expr) => {
            _mm512_ternarylogic_epi32::<0xCA>($b, $c, $d)
        };
    }
    macro_rules! g512 {
        ($b:expr, $c:expr, $d:expr) => {
            _mm512_ternarylogic_epi32::<0xE4>($b, $c, $d)
        };
    }
    macro_rules! h512 {
        ($b:expr, $c:expr, $d:expr) => {
            _mm512_ternarylogic_epi32::<0x96>($b, $c, $d)
        };
    }
    macro_rules! i512 {
        ($b:expr, $c:expr, $d:expr) => {
            _mm512_ternarylogic_epi32::<0x39>($b, $c, $d)
        };
    }
    kernel!(
        [run16: 1],
        "avx512f",
        16,
        __m512i,
        _mm512_add_epi32,
        _mm512_set1_epi32,
        _mm512_loadu_si512,
        _mm512_storeu_si512,
        words16,
        f512,
        g512,
        h512,
        i512,
        rotl512
    );

    // AVX2 and SSE2: a rotation is two shifts, the round functions plain bitwise operations,
    // the same over either width. `$d` is a `$` passed in, so that the macros made here can
    // have arguments of their own.
    macro_rules! bitwise_ops {
        ($d:tt, $and:ident, $or:ident, $xor:ident, $set1:ident, $sl:ident, $sr:ident,
         $rotl:ident, $f:ident, $g:ident, $h:ident, $i:ident) => {
            macro_rules! $rotl {
                            ($d x:expr, $d s:expr) => {{
                                let x = $d x;
                                $or($sl::<{ $d s as i32 }>(x), $sr::<{ 32 - $d s as i32 }>(x))
                            }};
                        }
            macro_rules! $f {
                            ($d b:expr, $d c:expr, $d dd:expr) => {
                                $xor($d dd, $and($d b, $xor($d c, $d dd)))
                            };
                        }
            macro_rules! $g {
                            ($d b:expr, $d c:expr, $d dd:expr) => {
                                $xor($d c, $and($d dd, $xor($d b, $d c)))
                            };
                        }
            macro_rules! $h {
                            ($d b:expr, $d c:expr, $d dd:expr) => {
                                $xor($xor($d b, $d c), $d dd)
                            };
                        }
            macro_rules! $i {
                            ($d b:expr, $d c:expr, $d dd:expr) => {
                                $xor($d c, $or($d b, $xor($d dd, $set1(-1))))
                            };
                        }
        };
    }
    bitwise_ops!(
        $,
        _mm256_and_si256,
        _mm256_or_si256,
        _mm256_xor_si256,
        _mm256_set1_epi32,
        _mm256_slli_epi32,
        _mm256_srli_epi32,
        rotl256,
        f256,
        g256,
        h256,
        i256
    );
    bitwise_ops!(
        $,
        _mm_and_si128,
        _mm_or_si128,
        _mm_xor_si128,
        _mm_set1_epi32,
        _mm_slli_epi32,
        _mm_srli_epi32,
        rotl128,
        f128,
        g128,
        h128,
        i128
    );
    kernel!(
        [run8: 1],
        "avx2",
        8,
        __m256i,
        _mm256_add_epi32,
        _mm256_set1_epi32,
        _mm256_loadu_si256,
        _mm256_storeu_si256,
        words8,
        f256,
        g256,
        h256,
        i256,
        rotl256
    );
    kernel!(
        [run4: 1, run4x2: 2],
        "sse2",
        4,
        __m128i,
        _mm_add_epi32,
        _mm_set1_epi32,
        _mm_loadu_si128,
        _mm_storeu_si128,
        words4,
        f128,
        g128,
        h128,
        i128,
        rotl128
    );

    /// The widest kernels this CPU runs.
    pub fn detect() -> super::Isa {
        if std::arch::is_x86_feature_detected!("avx512f") {
            super::Isa::Avx512
        } else if std::arch::is_x86_feature_detected!("avx2") {
            super::Isa::Avx2
        } else if std::arch::is_x86_feature_detected!("sse2") {
            super::Isa::Sse2
        } else {
            super::Isa::Scalar
        }
    }
}

/// NEON, which Rust's aarch64 targets enable for every build (the Raspberry Pi 3, 4 and 5 cores,
/// Cortex-A53, A72 and A76, all have it): the same kernel as SSE2's over `uint32x4_t`, two
/// groups of 4 lanes as there. Checked against md-5 under qemu-user; its speed against the
/// scalar code is not measured on ARM hardware.
#[cfg(target_arch = "aarch64")]
mod neon {
    use super::{K, SHIFTS, WORDS};
    use std::arch::aarch64::*;

    /// Transposes chunk `k` of 4 lanes, as `x86::words4` does: vector `j` holds word `j` of
    /// every lane.
    #[target_feature(enable = "neon")]
    #[inline]
    fn words4(data: &[&[u8]], k: usize) -> [uint32x4_t; 16] {
        let mut w = [vdupq_n_u32(0); 16];
        for quarter in 0..4 {
            let r: [uint32x4_t; 4] = std::array::from_fn(|l| {
                let at = 64 * k + 16 * quarter;
                // SAFETY: the slice checks that the lane's 16 bytes are there; a byte load
                // needs no alignment.
                vreinterpretq_u32_u8(unsafe { vld1q_u8(data[l][at..at + 16].as_ptr()) })
            });
            let t0 = vreinterpretq_u64_u32(vzip1q_u32(r[0], r[1]));
            let t1 = vreinterpretq_u64_u32(vzip2q_u32(r[0], r[1]));
            let t2 = vreinterpretq_u64_u32(vzip1q_u32(r[2], r[3]));
            let t3 = vreinterpretq_u64_u32(vzip2q_u32(r[2], r[3]));
            w[4 * quarter] = vreinterpretq_u32_u64(vzip1q_u64(t0, t2));
            w[4 * quarter + 1] = vreinterpretq_u32_u64(vzip2q_u64(t0, t2));
            w[4 * quarter + 2] = vreinterpretq_u32_u64(vzip1q_u64(t1, t3));
            w[4 * quarter + 3] = vreinterpretq_u32_u64(vzip2q_u64(t1, t3));
        }
        w
    }

    /// A constant in every lane (the kernel passes the sine table's entries as `i32`).
    #[target_feature(enable = "neon")]
    #[inline]
    fn set1(x: i32) -> uint32x4_t {
        vdupq_n_u32(x as u32)
    }

    // A rotation is a shift and a shift-right-and-insert; F and G are one bit select each.
    macro_rules! rotl_neon {
        ($x:expr, $s:expr) => {{
            let x = $x;
            vsriq_n_u32::<{ 32 - $s as i32 }>(vshlq_n_u32::<{ $s as i32 }>(x), x)
        }};
    }
    macro_rules! f_neon {
        ($b:expr, $c:expr, $d:expr) => {
            vbslq_u32($b, $c, $d)
        };
    }
    macro_rules! g_neon {
        ($b:expr, $c:expr, $d:expr) => {
            vbslq_u32($d, $b, $c)
        };
    }
    macro_rules! h_neon {
        ($b:expr, $c:expr, $d:expr) => {
            veorq_u32(veorq_u32($b, $c), $d)
        };
    }
    macro_rules! i_neon {
        ($b:expr, $c:expr, $d:expr) => {
            veorq_u32($c, vornq_u32($b, $d))
        };
    }
    kernel!(
        [run4: 1, run4x2: 2],
        "neon",
        4,
        uint32x4_t,
        vaddq_u32,
        set1,
        vld1q_u32,
        vst1q_u32,
        words4,
        f_neon,
        g_neon,
        h_neon,
        i_neon,
        rotl_neon
    );
}

/// The instruction sets the kernels are written for, narrowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    Scalar = 1,
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    Sse2,
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    Avx2,
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    Avx512,
    #[cfg(target_arch = "aarch64")]
    Neon,
}

impl Isa {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    const ALL: &[Isa] = &[Isa::Scalar, Isa::Sse2, Isa::Avx2, Isa::Avx512];
    #[cfg(target_arch = "aarch64")]
    const ALL: &[Isa] = &[Isa::Scalar, Isa::Neon];
    #[cfg(not(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")))]
    const ALL: &[Isa] = &[Isa::Scalar];

    /// Messages hashed side by side at most.
    fn lanes(self) -> usize {
        match self {
            Isa::Scalar => 1,
            // SSE2 runs two groups of 4 (16% faster than one on a Xeon); for AVX2 a second
            // group of 8 gained nothing there.
            #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
            Isa::Sse2 | Isa::Avx2 => 8,
            #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
            Isa::Avx512 => 16,
            // Two groups of 4, as SSE2 (not timed on ARM hardware).
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => 8,
        }
    }
}

/// The kernels in use (an `Isa`), 0 until detected. Tests lower it to try every kernel.
static ISA: AtomicUsize = AtomicUsize::new(0);

fn isa() -> Isa {
    let known = ISA.load(Ordering::Relaxed);
    if let Some(&i) = Isa::ALL.iter().find(|i| **i as usize == known) {
        return i;
    }
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    let i = x86::detect();
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    let i = Isa::Neon;
    #[cfg(not(any(
        target_arch = "x86",
        target_arch = "x86_64",
        all(target_arch = "aarch64", target_feature = "neon")
    )))]
    let i = Isa::Scalar;
    ISA.store(i as usize, Ordering::Relaxed);
    i
}

/// How many messages the CPU hashes side by side (1: one at a time).
pub fn lanes() -> usize {
    isa().lanes()
}

/// The kernels in use, for the log.
pub fn describe() -> String {
    let i = isa();
    format!("{} lanes ({i:?})", i.lanes())
}

/// Runs `chunks` chunks of up to `isa.lanes()` messages through the kernel that fits them.
fn run_any(st: &mut [[u32; 4]; MAX_LANES], data: &[&[u8]], chunks: usize, isa: Isa) {
    let n = data.len();
    // The kernels read `chunks` chunks of every lane: never more than the shortest has.
    let chunks = chunks.min(data.iter().map(|d| d.len() / 64).min().unwrap_or(0));
    if n == 0 || chunks == 0 {
        return;
    }
    macro_rules! wide {
        ($w:literal, $f:path) => {{
            let mut s = [[0u32; $w]; 4];
            for l in 0..n {
                for w in 0..4 {
                    s[w][l] = st[l][w];
                }
            }
            // Lanes without a message hash the first one again, for nobody.
            let d: [&[u8]; $w] = std::array::from_fn(|l| *data.get(l).unwrap_or(&data[0]));
            // SAFETY: `isa()` found the features this kernel is compiled for on this CPU.
            unsafe { $f(&mut s, &d, chunks) };
            for l in 0..n {
                for w in 0..4 {
                    st[l][w] = s[w][l];
                }
            }
        }};
    }
    // A vector's idle lanes take no extra time; a second group of vectors does.
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    match isa {
        Isa::Avx512 if n > 1 => return wide!(16, x86::run16),
        Isa::Avx2 if n > 1 => return wide!(8, x86::run8),
        Isa::Sse2 if n > 4 => return wide!(8, x86::run4x2),
        Isa::Sse2 if n > 1 => return wide!(4, x86::run4),
        _ => {}
    }
    #[cfg(target_arch = "aarch64")]
    match isa {
        Isa::Neon if n > 4 => return wide!(8, neon::run4x2),
        Isa::Neon if n > 1 => return wide!(4, neon::run4),
        _ => {}
    }
    let _ = isa;
    for (l, d) in data.iter().enumerate() {
        let blocks: &[[u8; 64]] = as_chunks(&d[..64 * chunks]);
        compress_one(&mut st[l], blocks);
    }
}

/// A slice whose length is a multiple of 64 as 64-byte chunks.
fn as_chunks(d: &[u8]) -> &[[u8; 64]] {
    let (chunks, rest) = d.as_chunks::<64>();
    debug_assert!(rest.is_empty());
    chunks
}

/// The last one or two chunks of a message: its tail, the 0x80 byte, zeros, and its length in
/// bits.
fn padded_tail(tail: &[u8], total: u64) -> ([u8; 128], usize) {
    let mut buf = [0u8; 128];
    buf[..tail.len()].copy_from_slice(tail);
    buf[tail.len()] = 0x80;
    let n = if tail.len() < 56 { 64 } else { 128 };
    buf[n - 8..n].copy_from_slice(&(total.wrapping_mul(8)).to_le_bytes());
    (buf, n)
}

fn digest(st: &[u32; 4]) -> Hash {
    let mut h = [0u8; 16];
    for (o, w) in h.chunks_exact_mut(4).zip(st) {
        o.copy_from_slice(&w.to_le_bytes());
    }
    h
}

/// The MD5 of each message, in order. Messages of equal length (blocks of a file) are hashed
/// side by side all the way; the tails of unequal ones are finished one at a time.
pub fn md5_each(msgs: &[&[u8]], out: &mut Vec<Hash>) {
    let isa = isa();
    let width = isa.lanes();
    if width == 1 || msgs.len() == 1 {
        out.extend(
            msgs.iter()
                .map(|m| -> Hash { <md5::Md5 as md5::Digest>::digest(m).into() }),
        );
        return;
    }
    for group in msgs.chunks(width) {
        let mut st = [INIT; MAX_LANES];
        let common = group.iter().map(|m| m.len()).min().unwrap_or(0) / 64;
        run_any(&mut st, group, common, isa);
        // What follows the common part: whole chunks (only where lengths differ), then the
        // padded tail.
        let mut tails = [([0u8; 128], 0usize); MAX_LANES];
        for (l, m) in group.iter().enumerate() {
            let whole = m.len() / 64;
            if whole > common {
                compress_one(&mut st[l], as_chunks(&m[64 * common..64 * whole]));
            }
            tails[l] = padded_tail(&m[64 * whole..], m.len() as u64);
        }
        let tails = &tails[..group.len()];
        let n = tails[0].1;
        if tails.iter().all(|t| t.1 == n) {
            let mut d: [&[u8]; MAX_LANES] = [&[]; MAX_LANES];
            for (l, t) in tails.iter().enumerate() {
                d[l] = &t.0[..n];
            }
            run_any(&mut st, &d[..group.len()], n / 64, isa);
        } else {
            for (l, t) in tails.iter().enumerate() {
                compress_one(&mut st[l], as_chunks(&t.0[..t.1]));
            }
        }
        out.extend(st[..group.len()].iter().map(digest));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::md5;

    fn data(n: usize, seed: u32) -> Vec<u8> {
        (0..n as u32)
            .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 11) as u8)
            .collect()
    }

    /// Every kernel the CPU has (one and two groups of vectors), on messages of equal and of
    /// mixed lengths, against md-5.
    #[test]
    fn matches_md5_on_every_kernel() {
        let best = isa();
        let lens = [
            0usize, 1, 55, 56, 63, 64, 65, 119, 120, 128, 1000, 4096, 65536,
        ];
        for &i in Isa::ALL.iter().filter(|i| **i <= best) {
            ISA.store(i as usize, Ordering::Relaxed);
            // Equal lengths, 1 to 17 messages (a partial and a second group too).
            for &len in &lens {
                for count in [1, 2, 3, 4, 5, 8, 9, 16, 17] {
                    let msgs: Vec<Vec<u8>> = (0..count).map(|s| data(len, s as u32)).collect();
                    let refs: Vec<&[u8]> = msgs.iter().map(|m| &m[..]).collect();
                    let mut got = Vec::new();
                    md5_each(&refs, &mut got);
                    let want: Vec<Hash> = refs.iter().map(|m| md5(m)).collect();
                    assert_eq!(got, want, "{i:?}, {count} messages of {len} bytes");
                }
            }
            // Mixed lengths.
            let msgs: Vec<Vec<u8>> = lens
                .iter()
                .chain(lens.iter().rev())
                .enumerate()
                .map(|(s, &len)| data(len, s as u32 + 99))
                .collect();
            let refs: Vec<&[u8]> = msgs.iter().map(|m| &m[..]).collect();
            let mut got = Vec::new();
            md5_each(&refs, &mut got);
            let want: Vec<Hash> = refs.iter().map(|m| md5(m)).collect();
            assert_eq!(got, want, "{i:?}, mixed lengths");
        }
        ISA.store(best as usize, Ordering::Relaxed);
    }
}
