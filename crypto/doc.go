// Package crypto is MXP's sans-I/O secure transport cryptography.
//
// The package is named crypto (import path
// github.com/mxp-dataplane/mxp/crypto); callers that also need the standard
// library's crypto package import this one under an alias, for example
// mxpcrypto.
//
// It turns bytes into bytes and keys: the caller owns sockets, timers and
// goroutines and passes the current time explicitly wherever time matters.
// Nothing here logs or reads the clock. Goroutines are started only with
// Config.ParallelDH (off by default): two per pair of DHs, a helper that
// may run one of them and an empty one that hurries the helper's start; a
// helper that starts after the caller took its job back ends at once,
// possibly just after the call returned. Randomness comes
// from Config.Rand (crypto/rand when nil) so tests can be deterministic.
//
// Pieces:
//   - Identity, PublicKey: long-term X25519 keys, their text form and key files.
//   - Initiator, Responder: the three-message handshake (Noise_IK_25519_ChaChaPoly_SHA256
//     for messages one and two, a key-confirmation message three), carried in
//     HANDSHAKE packets; cipher suite negotiation; allow-list hook; WireGuard-style
//     mac1/mac2 and stateless cookie replies; session tickets and 0-RTT data.
//   - Session: 1-RTT packet protection (Seal, Open, SealBatch, OpenBatch), header
//     protection, anti-replay window, key update with KEY_PHASE, amplification
//     accounting.
//
// docs/crypto.md describes the wire format and the key schedule.
package crypto
