"""Secret values in proposed writes: in the log as a keyed fingerprint, to the executor sealed.

A Secret's data, a credential in an env var or a ConfigMap value is needed by exactly one party,
the executor, and must never be stored in the log (which every service, the audit, SSE viewers
and the model read). So whichever service first holds such a value — the gateway for a person's
message, the planner for a model's tool call — replaces it with a reference

    sealed:<sealer>:<blob id>:<fingerprint>

and stores the value, sealed, OUTSIDE the log: on `sealed.<sealer>.<session>.<blob id>` in the
SEALED stream (docs/architecture.md, "Secret values in writes"). The pieces, one module each:

- **Sealing**: HPKE (RFC 9180, base mode; DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
  ChaCha20-Poly1305) from `cryptography`, to the executor's X25519 public key (the keyring's
  `sealing` entry, identity.sealing_key). The HPKE `info` binds the blob to its sealer, session
  and blob id, so a blob copied under another reference or into another session does not open.
- **Fingerprint**: HMAC-SHA256 of the value under a fresh random 32-byte key that travels only
  inside the sealed blob. A plain hash of a low-entropy password could be brute-forced from the
  log; this cannot without the key. The executor recomputes it after opening the blob and
  refuses the write unless it equals the one in the approved (hashed, granted) args: a blob
  swapped by anyone but its sealer, who would have to find another (key, value) with the same
  256-bit HMAC, is refused.
- **Who may do what** (services/runtime/natsconf.py): the gateway may only put on
  `sealed.gateway.>`, the planner on `sealed.planner.>`, the executor may only read (Direct
  Get); a subject holds one blob for good (discard-new per subject), and blobs expire
  (`INTERLOCK_SEALED_MAX_AGE_S`). A missing or expired blob fails the preview or the write with
  a recorded reason; nothing runs with another value.

Where values are sealed (`candidates`): every value of a Secret's `data`/`stringData`; env
entries (set_env, and `env` lists anywhere in a manifest or patch) and ConfigMap data whose name
says credential or whose value carries one by its shape. The same positions are the only ones
where the executor resolves a reference.

The modules, by role: `blobs` (references, fingerprints, sealing and opening a blob, and how a
reference is shown), `slots` (where in a tool's args a secret value may sit), `sealer` (the
gateway's and the planner's side), `commands` (a person's kubectl command lines, sealed as the
commands direct mode runs) and `opener` (the executor's side). Each is imported by name; this
package holds no code.
"""
