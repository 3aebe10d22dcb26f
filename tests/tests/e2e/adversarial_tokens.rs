//! Adversarial tokens (RFC 8725, JWT best current practices): one table,
//! each forged or malformed token refused with the exact problem code.
//!
//! Tokens are forged with the devkit issuer's real signing key wherever the
//! attack needs a genuine signature, so a refusal proves the check under
//! test and not merely a signature failure.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::StatusCode;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use tollbu_devkit::IssuerHandle;
use tollbu_devkit::demo_material::{self, CONSENT_KYC_PERSON0, CONSENT_KYC_PERSON1};
use tollbu_devkit::issuer::PERSON_URN_PREFIX;
use tollbu_tests::*;

/// What a case must produce.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// 401 `invalid_token` with this `token_error`.
    Invalid(&'static str),
    /// 403 with this problem code.
    Forbidden(&'static str),
    /// 200: a positive control, so the table cannot pass by refusing everything.
    Accepted,
}

struct Case {
    name: String,
    token: String,
    /// Path after the gateway base, and the declared purpose.
    path: String,
    purpose: &'static str,
    expect: Expect,
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `header.payload` signed with `alg` and `key` over the exact bytes given:
/// lets a case carry duplicate members or non-JSON while the signature is genuine.
fn sign_raw(header: &[u8], payload: &[u8], alg: Algorithm, key: &EncodingKey) -> String {
    let signing_input = format!("{}.{}", b64(header), b64(payload));
    let signature = jsonwebtoken::crypto::sign(signing_input.as_bytes(), key, alg).unwrap();
    format!("{signing_input}.{signature}")
}

fn issuer_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(demo_material::ISSUER_SIGNING_KEY_PEM.as_bytes()).unwrap()
}

/// An RSA key that is not the issuer's (a demo client's).
fn attacker_rsa_key() -> EncodingKey {
    let (_, pem) = demo_material::client_key("demo-bank").unwrap();
    EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap()
}

/// Maskinporten's access-token header: `alg` and `kid`, no `typ`.
fn header(issuer: &IssuerHandle, alg: &str) -> Value {
    json!({"alg": alg, "kid": issuer.current_kid()})
}

fn welfare_claims(issuer: &IssuerHandle) -> Value {
    issuer
        .access_token_claims("demo-welfare", "demo:population")
        .unwrap()
}

fn with(mut claims: Value, name: &str, value: Value) -> Value {
    if value.is_null() {
        claims.as_object_mut().unwrap().remove(name);
    } else {
        claims[name] = value;
    }
    claims
}

async fn call(env: &Env, token: &str, path: &str, purpose: &str) -> Answer {
    let mut s = String::new();
    get(
        &format!("{}{path}", env.base()),
        &auth(token, Some(purpose), &mut s),
    )
    .await
}

fn check(case: &Case, answer: &Answer) -> Result<(), String> {
    let body = String::from_utf8_lossy(&answer.body);
    let fail = |what: &str| {
        Err(format!(
            "{}: {what}; got {} {body}",
            case.name, answer.status
        ))
    };
    match case.expect {
        Expect::Accepted => {
            if answer.status != StatusCode::OK {
                return fail("expected 200");
            }
        }
        Expect::Invalid(token_error) => {
            if answer.status != StatusCode::UNAUTHORIZED
                || answer.code() != "invalid_token"
                || answer.json()["token_error"] != token_error
            {
                return fail(&format!("expected 401 invalid_token/{token_error}"));
            }
            if answer.header("www-authenticate")
                != "Bearer realm=\"tollbu\", error=\"invalid_token\""
            {
                return fail("expected WWW-Authenticate with error=invalid_token");
            }
        }
        Expect::Forbidden(code) => {
            if answer.status != StatusCode::FORBIDDEN || answer.code() != code {
                return fail(&format!("expected 403 {code}"));
            }
        }
    }
    if answer.status != StatusCode::OK
        && answer.header("content-type") != "application/problem+json"
    {
        return fail("refusal must be problem+json");
    }
    Ok(())
}

#[allow(clippy::too_many_lines)]
fn cases(env: &Env, second: &IssuerHandle) -> Vec<Case> {
    let issuer = env.issuer();
    let person0 = format!("/population/persons/{}", example_pid(0));
    let kid = issuer.current_kid();
    let claims = || welfare_claims(issuer);
    let claims_bytes = || serde_json::to_vec(&claims()).unwrap();
    let forge = |header: Value, claims: Value| issuer.sign_access_token(header, claims).unwrap();
    let genuine = |header: &Value, claims: &Value, alg: Algorithm, key: &EncodingKey| {
        sign_raw(
            &serde_json::to_vec(header).unwrap(),
            &serde_json::to_vec(claims).unwrap(),
            alg,
            key,
        )
    };
    let unsigned = |header: Value| {
        format!(
            "{}.{}.",
            b64(&serde_json::to_vec(&header).unwrap()),
            b64(&claims_bytes())
        )
    };
    let public_pem = rcgen::KeyPair::from_pem(demo_material::ISSUER_SIGNING_KEY_PEM)
        .unwrap()
        .public_key_pem();
    let hmac_key = EncodingKey::from_secret(public_pem.as_bytes());
    let ec_pem = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let ec_key = EncodingKey::from_ec_pem(ec_pem.as_bytes()).unwrap();
    let now = now();

    let mut t: Vec<(String, String, Expect)> = Vec::new();
    let mut add =
        |name: &str, token: String, expect: Expect| t.push((name.to_owned(), token, expect));

    // Positive controls.
    add(
        "genuine token",
        forge(json!({}), claims()),
        Expect::Accepted,
    );
    add(
        "expired within the leeway (exp = now - 3, leeway 10 s)",
        forge(
            json!({}),
            with(
                with(claims(), "iat", json!(now - 60)),
                "exp",
                json!(now - 3),
            ),
        ),
        Expect::Accepted,
    );
    // Maskinporten sends no `typ`; issuers following RFC 9068 send `at+jwt`.
    for typ in ["at+jwt", "application/at+jwt", "JWT"] {
        add(
            &format!("typ {typ}"),
            forge(json!({"typ": typ}), claims()),
            Expect::Accepted,
        );
    }

    // alg none and friends.
    for alg in ["none", "None", "NONE", "nOnE"] {
        add(
            &format!("alg {alg}, empty signature"),
            unsigned(json!({"alg": alg, "typ": "JWT", "kid": kid})),
            Expect::Invalid("algorithm_not_allowed"),
        );
    }
    let with_sig = forge(json!({"alg": "none"}), claims());
    add(
        "alg none with a signature attached",
        with_sig,
        Expect::Invalid("algorithm_not_allowed"),
    );

    // HMAC keyed with the issuer's public key (algorithm confusion).
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let h = header(issuer, &format!("{alg:?}"));
        add(
            &format!("{alg:?} keyed with the issuer's public key"),
            genuine(&h, &claims(), alg, &hmac_key),
            Expect::Invalid("algorithm_not_allowed"),
        );
    }

    // Algorithms not allow-listed for this issuer (RS256/384/512 only).
    add(
        "PS256 by another RSA key under the issuer's kid",
        genuine(
            &header(issuer, "PS256"),
            &claims(),
            Algorithm::PS256,
            &attacker_rsa_key(),
        ),
        Expect::Invalid("algorithm_not_allowed"),
    );
    add(
        "ES256 by a fresh P-256 key under the issuer's kid",
        genuine(
            &header(issuer, "ES256"),
            &claims(),
            Algorithm::ES256,
            &ec_key,
        ),
        Expect::Invalid("algorithm_not_allowed"),
    );
    add(
        "PS256 by the issuer's own key",
        genuine(
            &header(issuer, "PS256"),
            &claims(),
            Algorithm::PS256,
            &issuer_key(),
        ),
        Expect::Invalid("algorithm_not_allowed"),
    );
    add(
        "EdDSA (unsupported name)",
        forge(json!({"alg": "EdDSA"}), claims()),
        Expect::Invalid("algorithm_not_allowed"),
    );
    add(
        "alg in lower case (rs256)",
        forge(json!({"alg": "rs256"}), claims()),
        Expect::Invalid("algorithm_not_allowed"),
    );
    add(
        "alg missing",
        forge(json!({"alg": null}), claims()),
        Expect::Invalid("malformed"),
    );
    add(
        "alg as a number",
        forge(json!({"alg": 256}), claims()),
        Expect::Invalid("malformed"),
    );

    // kid games.
    for (name, bad_kid) in [
        ("kid path traversal", json!("../../../../etc/passwd")),
        ("kid absolute path", json!("/dev/null")),
        ("kid SQL injection", json!("x' OR '1'='1")),
        ("kid shell injection", json!("$(id);rm -rf /")),
        ("kid header injection", json!("k\r\nx-injected: 1")),
        ("kid NUL byte", json!("k\u{0}")),
        ("kid 10 000 characters", json!("a".repeat(10_000))),
        ("kid empty", json!("")),
        ("kid a number", json!(1)),
        ("kid missing", Value::Null),
        ("kid unknown but well-formed", json!("no-such-key")),
    ] {
        add(
            name,
            forge(json!({"kid": bad_kid}), claims()),
            Expect::Invalid("unknown_key"),
        );
    }

    // Keys or key references from the token itself.
    add(
        "jku header",
        forge(json!({"jku": format!("{}jwk", env.issuer_url)}), claims()),
        Expect::Invalid("forbidden_header"),
    );
    add(
        "x5u header",
        forge(
            json!({"x5u": "https://attacker.example/cert.pem"}),
            claims(),
        ),
        Expect::Invalid("forbidden_header"),
    );
    add(
        "jwk header",
        forge(
            json!({"jwk": {"kty": "RSA", "n": "sXch", "e": "AQAB"}}),
            claims(),
        ),
        Expect::Invalid("forbidden_header"),
    );
    for name in ["x5t", "x5t#S256"] {
        add(
            &format!("{name} header (a key reference, RFC 7515 4.1.7-8)"),
            forge(json!({name: "bWFkZS11cC10aHVtYnByaW50"}), claims()),
            Expect::Invalid("forbidden_header"),
        );
    }
    add(
        "x5c header",
        forge(json!({"x5c": ["MIIBszCCAVmgAwIBAgIUEj"]}), claims()),
        Expect::Invalid("forbidden_header"),
    );

    // crit, nesting, encryption.
    add(
        "crit naming exp",
        forge(json!({"crit": ["exp"]}), claims()),
        Expect::Invalid("unknown_critical_header"),
    );
    add(
        "crit b64 with b64=false (RFC 7797)",
        forge(json!({"crit": ["b64"], "b64": false}), claims()),
        Expect::Invalid("unknown_critical_header"),
    );
    add(
        "nested JWT (cty JWT)",
        forge(json!({"cty": "JWT"}), claims()),
        Expect::Invalid("nested_token"),
    );
    add(
        "nested JWT (cty jwt)",
        forge(json!({"cty": "jwt"}), claims()),
        Expect::Invalid("nested_token"),
    );
    add(
        "enc header in a JWS",
        forge(json!({"enc": "A256GCM"}), claims()),
        Expect::Invalid("nested_token"),
    );
    let jwe_header = b64(br#"{"alg":"RSA-OAEP-256","enc":"A256GCM","kid":"k"}"#);
    add(
        "JWE compact form (5 parts)",
        format!("{jwe_header}.ZW5j.aXY.Y2lwaGVy.dGFn"),
        Expect::Invalid("nested_token"),
    );
    add(
        "typ JWE",
        forge(json!({"typ": "JWE"}), claims()),
        Expect::Invalid("malformed"),
    );

    // Size and shape.
    add(
        "token over max_token_bytes (16 KiB)",
        forge(
            json!({}),
            with(claims(), "padding", json!("p".repeat(17_000))),
        ),
        Expect::Invalid("too_large"),
    );
    add(
        "header not base64url",
        format!("%%%.{}.c2ln", b64(&claims_bytes())),
        Expect::Invalid("malformed"),
    );
    add(
        "payload not base64url",
        format!("{}.***.c2ln", b64(br#"{"alg":"RS256","kid":"k"}"#)),
        Expect::Invalid("malformed"),
    );
    add(
        "payload base64 with padding",
        {
            let token = forge(json!({}), claims());
            let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
            parts[1].push_str("==");
            parts.join(".")
        },
        Expect::Invalid("malformed"),
    );
    add(
        "payload not JSON, genuinely signed",
        sign_raw(
            &serde_json::to_vec(&header(issuer, "RS256")).unwrap(),
            b"hello",
            Algorithm::RS256,
            &issuer_key(),
        ),
        Expect::Invalid("malformed"),
    );
    add(
        "payload a JSON array, genuinely signed",
        sign_raw(
            &serde_json::to_vec(&header(issuer, "RS256")).unwrap(),
            b"[1,2]",
            Algorithm::RS256,
            &issuer_key(),
        ),
        Expect::Invalid("bad_claims"),
    );
    add(
        "header a JSON array",
        format!("{}.{}.c2ln", b64(b"[\"RS256\"]"), b64(&claims_bytes())),
        Expect::Invalid("malformed"),
    );
    add(
        "two segments",
        format!(
            "{}.{}",
            b64(br#"{"alg":"RS256","kid":"k"}"#),
            b64(&claims_bytes())
        ),
        Expect::Invalid("malformed"),
    );
    add(
        "four segments",
        format!("{}.extra", forge(json!({}), claims())),
        Expect::Invalid("malformed"),
    );

    // Duplicate members (parser differentials), with genuine signatures.
    let iss = serde_json::to_string(&env.issuer_url).unwrap();
    let body = serde_json::to_string(&claims()).unwrap();
    let dup_iss = format!(r#"{{"iss":"https://evil.example/",{}"#, &body[1..]);
    assert!(dup_iss.contains(&iss));
    add(
        "duplicate iss claim",
        sign_raw(
            &serde_json::to_vec(&header(issuer, "RS256")).unwrap(),
            dup_iss.as_bytes(),
            Algorithm::RS256,
            &issuer_key(),
        ),
        Expect::Invalid("malformed"),
    );
    let dup_consumer = body.replacen(
        r#""ID":"0192:310000019""#,
        r#""ID":"0192:310000019","ID":"0192:310000027""#,
        1,
    );
    assert_ne!(dup_consumer, body, "consumer ID found");
    add(
        "duplicate nested consumer ID",
        sign_raw(
            &serde_json::to_vec(&header(issuer, "RS256")).unwrap(),
            dup_consumer.as_bytes(),
            Algorithm::RS256,
            &issuer_key(),
        ),
        Expect::Invalid("malformed"),
    );
    let dup_alg = format!(r#"{{"alg":"none","alg":"RS256","kid":"{kid}"}}"#);
    add(
        "duplicate alg header",
        sign_raw(
            dup_alg.as_bytes(),
            body.as_bytes(),
            Algorithm::RS256,
            &issuer_key(),
        ),
        Expect::Invalid("malformed"),
    );

    // Claims a working issuer never makes.
    add(
        "exp before iat",
        forge(
            json!({}),
            with(with(claims(), "iat", json!(now + 5)), "exp", json!(now + 1)),
        ),
        Expect::Invalid("bad_claims"),
    );
    add(
        "nbf after exp, both within the leeway of now",
        forge(
            json!({}),
            with(with(claims(), "nbf", json!(now + 5)), "exp", json!(now + 3)),
        ),
        Expect::Invalid("bad_claims"),
    );
    add(
        "scope separated by a tab (RFC 6749 3.3: single spaces)",
        forge(
            json!({}),
            with(claims(), "scope", json!("x\tdemo:population")),
        ),
        Expect::Invalid("bad_claims"),
    );
    add(
        "scope with a doubled space",
        forge(
            json!({}),
            with(claims(), "scope", json!("x  demo:population")),
        ),
        Expect::Invalid("bad_claims"),
    );
    add(
        "client_id with CR LF (it goes into the audit record and a registry header)",
        forge(
            json!({}),
            with(claims(), "client_id", json!("demo-welfare\r\nx: y")),
        ),
        Expect::Invalid("bad_claims"),
    );

    // An end-user-restricted token (`pid`) may only be used about its own person.
    add(
        "pid of the person read",
        forge(json!({}), with(claims(), "pid", json!(example_pid(0)))),
        Expect::Accepted,
    );
    add(
        "pid of another person",
        forge(json!({}), with(claims(), "pid", json!(example_pid(1)))),
        Expect::Forbidden("token_person_mismatch"),
    );
    add(
        "pid with wrong check digits",
        forge(json!({}), with(claims(), "pid", json!("01819010002"))),
        Expect::Invalid("bad_claims"),
    );

    // Time claims of wrong types or absurd values.
    add(
        "exp a string",
        forge(
            json!({}),
            with(claims(), "exp", json!(format!("{}", now + 60))),
        ),
        Expect::Invalid("bad_claims"),
    );
    // NumericDates may carry fractions (RFC 7519 §2): positive controls.
    add(
        "exp with a fraction",
        forge(json!({}), with(claims(), "exp", json!(now as f64 + 60.5))),
        Expect::Accepted,
    );
    add(
        "iat and nbf with fractions",
        forge(
            json!({}),
            with(
                with(claims(), "iat", json!(now as f64 - 1.25)),
                "nbf",
                json!(now as f64 - 1.75),
            ),
        ),
        Expect::Accepted,
    );
    add(
        "exp a negative fraction",
        forge(json!({}), with(claims(), "exp", json!(-0.5))),
        Expect::Invalid("bad_claims"),
    );
    add(
        "iat a fraction beyond 2^53",
        forge(json!({}), with(claims(), "iat", json!(1.0e16))),
        Expect::Invalid("bad_claims"),
    );
    add(
        "exp 1e300",
        forge(json!({}), with(claims(), "exp", json!(1e300))),
        Expect::Invalid("bad_claims"),
    );
    add(
        "exp i64::MAX",
        forge(json!({}), with(claims(), "exp", json!(i64::MAX))),
        Expect::Invalid("bad_claims"),
    );
    add(
        "exp u64::MAX",
        forge(json!({}), with(claims(), "exp", json!(u64::MAX))),
        Expect::Invalid("bad_claims"),
    );
    add(
        "exp negative",
        forge(json!({}), with(claims(), "exp", json!(-1))),
        Expect::Invalid("expired"),
    );
    add(
        "exp missing",
        forge(json!({}), with(claims(), "exp", Value::Null)),
        Expect::Invalid("bad_claims"),
    );
    add(
        "exp null",
        forge(json!({}), {
            let mut c = claims();
            c["exp"] = Value::Null;
            c
        }),
        Expect::Invalid("bad_claims"),
    );
    add(
        "expired by leeway + 1 s",
        forge(
            json!({}),
            with(
                with(claims(), "iat", json!(now - 60)),
                "exp",
                json!(now - 11),
            ),
        ),
        Expect::Invalid("expired"),
    );
    add(
        "iat in the future beyond leeway",
        forge(json!({}), with(claims(), "iat", json!(now + 600))),
        Expect::Invalid("not_yet_valid"),
    );
    add(
        "iat i64::MIN",
        forge(json!({}), with(claims(), "iat", json!(i64::MIN))),
        Expect::Invalid("too_old"),
    );
    add(
        "iat missing",
        forge(json!({}), with(claims(), "iat", Value::Null)),
        Expect::Invalid("bad_claims"),
    );
    add(
        "iat two hours ago (max age 1 h)",
        forge(json!({}), with(claims(), "iat", json!(now - 7200))),
        Expect::Invalid("too_old"),
    );
    add(
        "nbf in the future beyond leeway",
        forge(json!({}), with(claims(), "nbf", json!(now + 600))),
        Expect::Invalid("not_yet_valid"),
    );
    add(
        "nbf a string",
        forge(json!({}), with(claims(), "nbf", json!("0"))),
        Expect::Invalid("bad_claims"),
    );
    add(
        "lifetime beyond max age (exp now + 1 day)",
        forge(json!({}), with(claims(), "exp", json!(now + 86_400))),
        Expect::Invalid("bad_claims"),
    );

    // Audience: the test gateway configures none, so it is the audience of no token (RFC 7519
    // §4.1.3: a recipient not named in a present `aud` must refuse the token).
    add(
        "aud for another API, no audience configured",
        forge(
            json!({}),
            with(claims(), "aud", json!("https://other.example/api")),
        ),
        Expect::Invalid("wrong_audience"),
    );
    add(
        "aud as a list naming another API, no audience configured",
        forge(
            json!({}),
            with(claims(), "aud", json!(["https://other.example/api"])),
        ),
        Expect::Invalid("wrong_audience"),
    );

    // Issuer matching.
    add(
        "iss without its trailing slash",
        forge(
            json!({}),
            with(claims(), "iss", json!(env.issuer_url.trim_end_matches('/'))),
        ),
        Expect::Invalid("untrusted_issuer"),
    );
    add(
        "iss with a doubled trailing slash",
        forge(
            json!({}),
            with(claims(), "iss", json!(format!("{}/", env.issuer_url))),
        ),
        Expect::Invalid("untrusted_issuer"),
    );
    add(
        "iss in upper case",
        forge(
            json!({}),
            with(claims(), "iss", json!(env.issuer_url.to_uppercase())),
        ),
        Expect::Invalid("untrusted_issuer"),
    );
    add(
        "iss with a trailing space",
        forge(
            json!({}),
            with(claims(), "iss", json!(format!("{} ", env.issuer_url))),
        ),
        Expect::Invalid("untrusted_issuer"),
    );
    add(
        "iss as an array",
        forge(json!({}), with(claims(), "iss", json!([env.issuer_url]))),
        Expect::Invalid("bad_claims"),
    );
    add(
        "iss missing",
        forge(json!({}), with(claims(), "iss", Value::Null)),
        Expect::Invalid("bad_claims"),
    );

    // Claims we authorise on.
    add(
        "scope as an array",
        forge(
            json!({}),
            with(claims(), "scope", json!(["demo:population"])),
        ),
        Expect::Invalid("bad_claims"),
    );
    add(
        "consumer with the wrong authority",
        forge(
            json!({}),
            with(
                claims(),
                "consumer",
                json!({"authority": "iso6523-actorid-xxx", "ID": "0192:310000019"}),
            ),
        ),
        Expect::Invalid("bad_consumer"),
    );
    add(
        "consumer org number too short",
        forge(
            json!({}),
            with(
                claims(),
                "consumer",
                json!({"authority": "iso6523-actorid-upis", "ID": "0192:31000001"}),
            ),
        ),
        Expect::Invalid("bad_consumer"),
    );
    add(
        "consumer org number with a bad check digit",
        forge(
            json!({}),
            with(
                claims(),
                "consumer",
                json!({"authority": "iso6523-actorid-upis", "ID": "0192:310000018"}),
            ),
        ),
        Expect::Invalid("bad_consumer"),
    );
    add(
        "consumer under another ICD (0088)",
        forge(
            json!({}),
            with(
                claims(),
                "consumer",
                json!({"authority": "iso6523-actorid-upis", "ID": "0088:310000019"}),
            ),
        ),
        Expect::Invalid("bad_consumer"),
    );
    add(
        "consumer org number with letters",
        forge(
            json!({}),
            with(
                claims(),
                "consumer",
                json!({"authority": "iso6523-actorid-upis", "ID": "0192:31000001x"}),
            ),
        ),
        Expect::Invalid("bad_consumer"),
    );
    add(
        "consumer as a plain string",
        forge(
            json!({}),
            with(claims(), "consumer", json!("0192:310000019")),
        ),
        Expect::Invalid("bad_claims"),
    );
    add(
        "supplier with a bad check digit",
        forge(
            json!({}),
            with(
                claims(),
                "supplier",
                json!({"authority": "iso6523-actorid-upis", "ID": "0192:310000044"}),
            ),
        ),
        Expect::Invalid("bad_supplier"),
    );
    add(
        "supplier under another authority",
        forge(
            json!({}),
            with(
                claims(),
                "supplier",
                json!({"authority": "iso6523-actorid-xxx", "ID": "0192:310000019"}),
            ),
        ),
        Expect::Invalid("bad_supplier"),
    );
    add(
        "jti missing",
        forge(json!({}), with(claims(), "jti", Value::Null)),
        Expect::Invalid("bad_claims"),
    );
    add(
        "jti empty",
        forge(json!({}), with(claims(), "jti", json!(""))),
        Expect::Invalid("bad_claims"),
    );
    add(
        "token_type DPoP",
        forge(json!({}), with(claims(), "token_type", json!("DPoP"))),
        Expect::Invalid("bad_claims"),
    );

    // Signatures.
    add(
        "signed by another RSA key under the issuer's kid",
        genuine(
            &header(issuer, "RS256"),
            &claims(),
            Algorithm::RS256,
            &attacker_rsa_key(),
        ),
        Expect::Invalid("bad_signature"),
    );
    add(
        "claims swapped after signing",
        {
            let token = forge(json!({}), claims());
            let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
            let mut other = claims();
            other["consumer"]["ID"] = json!("0192:310000027");
            parts[1] = b64(&serde_json::to_vec(&other).unwrap());
            parts.join(".")
        },
        Expect::Invalid("bad_signature"),
    );
    add(
        "signature stripped",
        {
            let token = forge(json!({}), claims());
            format!("{}.", &token[..token.rfind('.').unwrap()])
        },
        Expect::Invalid("bad_signature"),
    );

    // Another trusted issuer, on a service that accepts only the first.
    let second_claims = with(claims(), "iss", json!(second.issuer_url()));
    add(
        "token of the second trusted issuer on a first-issuer-only service",
        second
            .sign_access_token(json!({}), second_claims.clone())
            .unwrap(),
        Expect::Invalid("untrusted_issuer"),
    );
    add(
        "first issuer's key, second issuer's iss",
        forge(json!({}), second_claims),
        Expect::Invalid("unknown_key"),
    );

    // authorization_details that do not parse.
    add(
        "authorization_details of an unknown type",
        forge(
            json!({}),
            with(
                claims(),
                "authorization_details",
                json!([{"type": "urn:example:admin", "id": "x"}]),
            ),
        ),
        Expect::Invalid("bad_authorization_details"),
    );
    add(
        "authorization_details not an array",
        forge(
            json!({}),
            with(
                claims(),
                "authorization_details",
                json!({"type": "urn:altinn:consent"}),
            ),
        ),
        Expect::Invalid("bad_claims"),
    );
    let mut bad_from = issuer.consent_entry(CONSENT_KYC_PERSON0).unwrap();
    bad_from["from"] = json!(format!("{PERSON_URN_PREFIX}12345678901"));
    add(
        "consent from a malformed identity number",
        forge(
            json!({}),
            with(claims(), "authorization_details", json!([bad_from])),
        ),
        Expect::Invalid("bad_authorization_details"),
    );

    let mut cases: Vec<Case> = t
        .into_iter()
        .map(|(name, token, expect)| Case {
            name,
            token,
            path: person0.clone(),
            purpose: "benefit-assessment",
            expect,
        })
        .collect();

    // Consent cases: the bank, purpose kyc, reading person 0.
    let bank = |details: Value| {
        forge(
            json!({}),
            with(
                issuer
                    .access_token_claims("demo-bank", "demo:population")
                    .unwrap(),
                "authorization_details",
                details,
            ),
        )
    };
    let entry0 = issuer.consent_entry(CONSENT_KYC_PERSON0).unwrap();
    let mut consent = |name: &str, details: Value, expect: Expect| {
        cases.push(Case {
            name: name.to_owned(),
            token: bank(details),
            path: person0.clone(),
            purpose: "kyc",
            expect,
        });
    };
    consent(
        "consent of person 0 (positive control)",
        json!([entry0.clone()]),
        Expect::Accepted,
    );
    consent(
        "consent from another person",
        json!([issuer.consent_entry(CONSENT_KYC_PERSON1).unwrap()]),
        Expect::Forbidden("consent_wrong_subject"),
    );
    let mut to_other = entry0.clone();
    to_other["to"]["ID"] = json!("0192:310000019");
    consent(
        "consent to another consumer",
        json!([to_other]),
        Expect::Forbidden("consent_wrong_consumer"),
    );
    let mut expired = entry0.clone();
    expired["validTo"] = json!("2025-06-30T00:00:00Z");
    consent(
        "consent past its validTo",
        json!([expired]),
        Expect::Forbidden("consent_expired"),
    );
    let mut other_resource = entry0.clone();
    other_resource["consentRights"][0]["resource"][0]["value"] = json!("demo-income-data");
    consent(
        "consent for another resource",
        json!([other_resource]),
        Expect::Forbidden("consent_not_covering"),
    );
    let mut bad_validto = entry0.clone();
    bad_validto["validTo"] = json!("tomorrow");
    consent(
        "consent with validTo not RFC 3339",
        json!([bad_validto]),
        Expect::Invalid("bad_authorization_details"),
    );
    // The consent id is recorded verbatim: one that names a person or holds a line break would
    // put the number in clear into the log, or bend the record.
    let mut pid_as_id = entry0.clone();
    pid_as_id["id"] = json!(tollbu_devkit::people::example_pid(3));
    consent(
        "consent id holding an identity number",
        json!([pid_as_id]),
        Expect::Invalid("bad_authorization_details"),
    );
    let mut control_in_id = entry0.clone();
    control_in_id["id"] = json!("abc\ndef");
    consent(
        "consent id holding a line break",
        json!([control_in_id]),
        Expect::Invalid("bad_authorization_details"),
    );
    let mut wrong_resource_type = entry0;
    wrong_resource_type["consentRights"][0]["resource"][0]["type"] = json!("urn:example:resource");
    consent(
        "consent resource of an unknown type",
        json!([wrong_resource_type]),
        Expect::Invalid("bad_authorization_details"),
    );
    cases
}

#[tokio::test]
async fn every_adversarial_token_is_refused_with_its_code() {
    let second = start_second_issuer().await;
    let env = Env::start(Options {
        extra_config: format!(
            "\n[[issuer]]\nissuer = \"{}\"\njwks_url = \"{}\"\njwks_min_refetch_secs = 0\n",
            second.issuer_url(),
            second.jwks_url()
        ),
        population_issuers: Some(vec!["$ISSUER".to_owned()]),
        ..Options::default()
    })
    .await;

    // The second issuer is trusted: its token works where all issuers are accepted.
    let mut tax = second
        .access_token_claims("demo-tax", "demo:income")
        .unwrap();
    tax["iss"] = json!(second.issuer_url());
    let tax_token = second.sign_access_token(json!({}), tax).unwrap();
    let answer = call(
        &env,
        &tax_token,
        &format!("/income/persons/{}/income/2022", example_pid(0)),
        "tax-assessment",
    )
    .await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "second issuer trusted on income: {:?}",
        answer.body
    );

    let cases = cases(&env, &second);
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let answer = call(&env, &case.token, &case.path, case.purpose).await;
        if let Err(why) = check(case, &answer) {
            failures.push(why);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn odd_authorization_headers_are_refused() {
    let env = Env::start(Options::default()).await;
    let token = env.token("demo-welfare", "demo:population", &[]).await;
    let url = format!("{}/population/persons/{}", env.base(), example_pid(0));
    let bearer = format!("Bearer {token}");
    let purpose = ("tollbu-purpose", "benefit-assessment");

    let twice = get(
        &url,
        &[
            ("authorization", &bearer),
            ("authorization", &bearer),
            purpose,
        ],
    )
    .await;
    assert_eq!(twice.status, StatusCode::UNAUTHORIZED);
    assert_eq!(twice.json()["token_error"], "malformed");

    for scheme in ["Basic", "Token", "DPoP"] {
        let other = format!("{scheme} {token}");
        let answer = get(&url, &[("authorization", &other), purpose]).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{scheme}");
        assert_eq!(answer.code(), "missing_token", "{scheme}");
    }
    let lower = format!("bearer {token}");
    assert_eq!(
        get(&url, &[("authorization", &lower), purpose])
            .await
            .status,
        StatusCode::OK,
        "scheme is case-insensitive (RFC 6750)"
    );
    let empty = get(&url, &[("authorization", "Bearer "), purpose]).await;
    assert_eq!(empty.code(), "missing_token");
    // RFC 6750 separates scheme and token by spaces only: more than one is fine, a tab is not
    // (seed 1796599064179413153 of the mutation test found a tab accepted).
    let two_spaces = format!("Bearer  {token}");
    let answer = get(&url, &[("authorization", &two_spaces), purpose]).await;
    assert_eq!(answer.status, StatusCode::OK);
    let tab = format!("Bearer \t{token}");
    let answer = get(&url, &[("authorization", &tab), purpose]).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.json()["token_error"], "malformed");
    let spaced = format!("Bearer {} {}", token, token);
    let answer = get(&url, &[("authorization", &spaced), purpose]).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.json()["token_error"], "malformed");
}

/// A cheap stand-in for the token fuzz target that runs in CI: thousands of
/// mutations of a genuine token, none of which may be accepted unless it is
/// byte-identical to the original, and none of which may crash the gateway.
#[tokio::test]
async fn mutated_tokens_are_never_accepted() {
    let env = Env::start(Options::default()).await;
    let token = env.token("demo-welfare", "demo:population", &[]).await;
    let mut rng = XorShift::seeded();
    let client = client(false);
    let url = format!("{}/population/persons/{}", env.base(), example_pid(0));
    for _ in 0..400 {
        let mutated = mutate(token.as_bytes(), &mut rng);
        let Ok(text) = String::from_utf8(mutated) else {
            continue;
        };
        if text == token || http::HeaderValue::from_str(&format!("Bearer {text}")).is_err() {
            continue;
        }
        let bearer = format!("Bearer {text}");
        let answer = get_with(
            &client,
            &url,
            &[
                ("authorization", &bearer),
                ("tollbu-purpose", "benefit-assessment"),
            ],
        )
        .await;
        if answer.status == StatusCode::OK {
            // Only an unchanged signing input and signature may pass; base64
            // has no alternative spellings we accept.
            panic!("mutated token accepted (seed {}): {text}", rng.seed);
        }
        assert!(
            answer.status == StatusCode::UNAUTHORIZED,
            "mutated token: {} {:?}",
            answer.status,
            answer.body
        );
    }
    assert_eq!(
        get_with(
            &client,
            &url,
            &[
                ("authorization", &format!("Bearer {token}")),
                ("tollbu-purpose", "benefit-assessment")
            ]
        )
        .await
        .status,
        StatusCode::OK,
        "still serving"
    );
}

/// Deterministic, dependency-free PRNG; the seed is printed on failure.
pub struct XorShift {
    state: u64,
    pub seed: u64,
}

impl XorShift {
    pub fn seeded() -> XorShift {
        let seed = std::env::var("TOLLBU_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
                    | 1
            });
        XorShift { state: seed, seed }
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        x
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One to three byte-level edits: flip, insert, delete, or swap in a JOSE-ish byte.
fn mutate(input: &[u8], rng: &mut XorShift) -> Vec<u8> {
    const INTERESTING: &[u8] = b".=-_+/AaZz09 \t";
    let mut out = input.to_vec();
    for _ in 0..=rng.below(3) {
        let at = rng.below(out.len());
        match rng.below(4) {
            0 => out[at] ^= 1 << rng.below(7),
            1 => out.insert(at, INTERESTING[rng.below(INTERESTING.len())]),
            2 if out.len() > 1 => {
                out.remove(at);
            }
            _ => out[at] = INTERESTING[rng.below(INTERESTING.len())],
        }
    }
    out
}
