//! What authenticating one request costs: an API key (digest + constant-time compares over
//! every key) and JWTs (HS256, ES256: verified once, then remembered by the shard).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use criterion::{criterion_group, criterion_main, Criterion};
use mcp_proxy::auth::authenticate;
use mcp_proxy::auth::jwt::verify;
use mcp_proxy::config::Config;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

const SECRET: &[u8] = b"bench-hs256-secret-of-32-bytes!!";
const NOW: u64 = 1_764_000_000;

fn b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

fn signing_input(alg: &str, kid: &str) -> String {
    let header = format!(r#"{{"alg":"{alg}","kid":"{kid}","typ":"JWT"}}"#);
    let claims = format!(
        r#"{{"iss":"https://issuer","aud":"mcp-proxy","sub":"agent-7","exp":{}}}"#,
        NOW + 3600
    );
    format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()))
}

fn auth(c: &mut Criterion) {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
    let ec = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .expect("key");
    let point = ec.public_key().as_ref();
    let jwks = format!(
        r#"{{"keys":[{{"kty":"oct","kid":"hs","k":"{}"}},{{"kty":"EC","crv":"P-256","kid":"es","x":"{}","y":"{}"}}]}}"#,
        b64(SECRET),
        b64(&point[1..33]),
        b64(&point[33..65])
    );
    let path = std::env::temp_dir().join(format!("mcp-bench-jwks-{}.json", std::process::id()));
    std::fs::write(&path, jwks).expect("write jwks");
    // Ten clients of two keys each, so the API-key path compares against twenty digests.
    let mut text = format!(
        "[auth]\nenabled = true\njwks_file = \"{}\"\nissuer = \"https://issuer\"\naudience = \"mcp-proxy\"\n",
        path.display()
    );
    for i in 0..10 {
        text.push_str(&format!(
            "[[auth.clients]]\nname = \"c{i}\"\napi_keys = [\"key-{i}-a-0123456789abcdef\", \"key-{i}-b-0123456789abcdef\"]\nsubjects = [\"agent-{i}*\"]\n"
        ));
    }
    let config = Config::from_toml_str(&text, "bench.toml").expect("config");
    let _ = std::fs::remove_file(&path);

    let hs_input = signing_input("HS256", "hs");
    let tag = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET),
        hs_input.as_bytes(),
    );
    let hs = format!("Bearer {hs_input}.{}", b64(tag.as_ref()));
    let es_input = signing_input("ES256", "es");
    let sig = ec.sign(&rng, es_input.as_bytes()).expect("sign");
    let es = format!("Bearer {es_input}.{}", b64(sig.as_ref()));
    let key = "Bearer key-9-b-0123456789abcdef";
    for h in [&hs, &es, key] {
        assert!(authenticate(&config.auth, Some(h), NOW).is_ok(), "{h}");
    }

    let mut group = c.benchmark_group("auth");
    group.bench_function("api_key_of_20", |b| {
        b.iter(|| std::hint::black_box(authenticate(&config.auth, Some(key), NOW)))
    });
    // A token seen before on this shard: digest and lookup only.
    group.bench_function("jwt_remembered", |b| {
        b.iter(|| std::hint::black_box(authenticate(&config.auth, Some(&es), NOW)))
    });
    // A token seen for the first time: the whole verification.
    group.bench_function("jwt_hs256_verify", |b| {
        b.iter(|| std::hint::black_box(verify(&config.auth, &[], &hs[7..], NOW)))
    });
    group.bench_function("jwt_es256_verify", |b| {
        b.iter(|| std::hint::black_box(verify(&config.auth, &[], &es[7..], NOW)))
    });
    group.finish();
}

criterion_group!(benches, auth);
criterion_main!(benches);
