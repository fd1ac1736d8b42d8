//! RSA signatures over a message digest: PKCS#1 v1.5 (RS*) and PSS (PS*). PSS verification
//! recovers the salt length from the signature, as OpenSSL's default (`RSA_PSS_SALTLEN_AUTO`)
//! does, so tokens signed with any salt length verify; signing uses a salt as long as the
//! digest (what RFC 7518 asks of PS256/384/512 and what OpenSSL 3 picks by default).

use rsa::traits::PublicKeyParts;
use rsa::{BigUint, Pkcs1v15Sign, Pss, RsaPrivateKey, RsaPublicKey};

use super::digest::DigestAlg;

/// Runs `$body` with `$d` a type alias for the digest `$alg` names.
macro_rules! with_digest {
    ($alg:expr, $d:ident => $body:expr) => {
        match $alg {
            DigestAlg::Md5 => {
                type $d = md5::Md5;
                $body
            }
            DigestAlg::Sha1 => {
                type $d = sha1::Sha1;
                $body
            }
            DigestAlg::Sha224 => {
                type $d = sha2::Sha224;
                $body
            }
            DigestAlg::Sha256 => {
                type $d = sha2::Sha256;
                $body
            }
            DigestAlg::Sha384 => {
                type $d = sha2::Sha384;
                $body
            }
            DigestAlg::Sha512 => {
                type $d = sha2::Sha512;
                $body
            }
        }
    };
}

/// The PSS salt length `opts.pss_saltlen` asks for: a byte count, or OpenSSL's -1 (digest
/// length) / -2 (the longest that fits; on verify, whatever the signature holds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaltLen {
    Digest,
    Max,
    Exact(usize),
}

pub fn sign_pkcs1(key: &RsaPrivateKey, alg: DigestAlg, hash: &[u8]) -> Result<Vec<u8>, String> {
    let scheme = with_digest!(alg, D => Pkcs1v15Sign::new::<D>());
    key.sign(scheme, hash).map_err(|e| e.to_string())
}

pub fn verify_pkcs1(key: &RsaPublicKey, alg: DigestAlg, hash: &[u8], sig: &[u8]) -> bool {
    let scheme = with_digest!(alg, D => Pkcs1v15Sign::new::<D>());
    key.verify(scheme, hash, sig).is_ok()
}

pub fn sign_pss(
    key: &RsaPrivateKey,
    alg: DigestAlg,
    hash: &[u8],
    salt: SaltLen,
) -> Result<Vec<u8>, String> {
    let h_len = alg.output_len();
    let em_len = (key.n().bits() - 1).div_ceil(8);
    let max = em_len.saturating_sub(h_len + 2);
    let salt_len = match salt {
        SaltLen::Digest => h_len.min(max),
        SaltLen::Max => max,
        SaltLen::Exact(n) => n,
    };
    let scheme = with_digest!(alg, D => Pss::new_with_salt::<D>(salt_len));
    key.sign_with_rng(&mut rand_core::OsRng, scheme, hash)
        .map_err(|e| e.to_string())
}

/// MGF1 (RFC 8017 B.2.1) over `alg`, XORed into `out`.
fn mgf1_xor(out: &mut [u8], alg: DigestAlg, seed: &[u8]) {
    for (counter, chunk) in (0u32..).zip(out.chunks_mut(alg.output_len())) {
        let mask = alg.hash(&[seed, &counter.to_be_bytes()]);
        chunk.iter_mut().zip(mask.iter()).for_each(|(o, m)| *o ^= m);
    }
}

/// EMSA-PSS verification (RFC 8017 9.1.2) with MGF1 over the same digest. With
/// `SaltLen::Max` (OpenSSL's auto), the salt is whatever follows the 0x01 separator.
pub fn verify_pss(
    key: &RsaPublicKey,
    alg: DigestAlg,
    m_hash: &[u8],
    sig: &[u8],
    salt: SaltLen,
) -> bool {
    let k = key.size();
    if sig.len() != k || m_hash.len() != alg.output_len() {
        return false;
    }
    let s = BigUint::from_bytes_be(sig);
    if &s >= key.n() {
        return false;
    }
    let Ok(m) = rsa::hazmat::rsa_encrypt(key, &s) else {
        return false;
    };
    let m = m.to_bytes_be();
    if m.len() > k {
        return false;
    }
    let mut em_full = vec![0u8; k - m.len()];
    em_full.extend_from_slice(&m);
    let em_bits = key.n().bits() - 1;
    let em_len = em_bits.div_ceil(8);
    if em_full[..k - em_len].iter().any(|&b| b != 0) {
        return false;
    }
    let em = &em_full[k - em_len..];
    let h_len = alg.output_len();
    if em_len < h_len + 2 || em[em_len - 1] != 0xbc {
        return false;
    }
    let (masked_db, rest) = em.split_at(em_len - h_len - 1);
    let h = &rest[..h_len];
    let zero_bits = 8 * em_len - em_bits;
    if zero_bits > 0 && masked_db[0] >> (8 - zero_bits) != 0 {
        return false;
    }
    let mut db = masked_db.to_vec();
    mgf1_xor(&mut db, alg, h);
    if zero_bits > 0 {
        db[0] &= 0xff >> zero_bits;
    }
    let Some(sep) = db.iter().position(|&b| b != 0) else {
        return false;
    };
    if db[sep] != 0x01 {
        return false;
    }
    let salt_bytes = &db[sep + 1..];
    let expected = match salt {
        SaltLen::Digest => Some(h_len),
        SaltLen::Exact(n) => Some(n),
        SaltLen::Max => None,
    };
    if expected.is_some_and(|n| n != salt_bytes.len()) {
        return false;
    }
    let h2 = alg.hash(&[&[0u8; 8], m_hash, salt_bytes]);
    // Constant-time compare: the hash is public, but there is no reason to leak where it differs.
    h2.iter()
        .zip(h.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}
