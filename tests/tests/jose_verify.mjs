// Verifies a Keygate token with jose, a standard JOSE library, against a JWKS document:
//   node tests/tests/jose_verify.mjs '<jwks json>' '<token>' '<issuer>' '<audience>'
// Prints the verified payload as JSON; exits 1 (with the reason on stderr) if it does not verify.
import { createLocalJWKSet, jwtVerify } from "jose";

const [jwks, token, issuer, audience] = process.argv.slice(2);
try {
  const keys = createLocalJWKSet(JSON.parse(jwks));
  const { payload, protectedHeader } = await jwtVerify(token, keys, { issuer, audience, algorithms: ["EdDSA"] });
  console.log(JSON.stringify({ header: protectedHeader, payload }));
} catch (err) {
  console.error(`${err.code ?? "ERROR"}: ${err.message}`);
  process.exit(1);
}
