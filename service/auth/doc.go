// Package auth authenticates and authorizes requests: the Huawei Cloud AK/SK signature
// scheme SDK-HMAC-SHA256 (client signing and server verification), the credential store
// behind it, and the role table that the service checks before each operation.
//
// # Signature scheme
//
// A request is signed over a canonical request built from the method, the path, the
// query, the headers named in SignedHeaders and the SHA-256 of the body. The rules are
// those of the official Huawei Cloud Go SDK (github.com/huaweicloud/huaweicloud-sdk-go-v3,
// checked against v0.1.215, core/auth/signer/signer.go). Sign is the client side and
// Verifier.Verify the server side. The server rebuilds the canonical request from the
// request as received, never from a decoded or re-serialized form.
//
// # Credentials
//
// Credentials manages access keys. Secret keys are stored only sealed by a token key, and
// unsealed secrets are cached in memory for a bounded time (CredentialsConfig.CacheTTL),
// so a change made on another replica takes effect here within that bound.
//
// # Concurrency
//
// Verifier and Credentials are safe for concurrent use by multiple goroutines.
package auth
