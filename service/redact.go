package service

// Redacted is the placeholder that logs and audit records show for a value that can be
// a secret (MaybeSecret).
const Redacted = "(redacted)"

// minSecretRun is the shortest run of characters for which MaybeSecret reports a value.
// Key ids have runs of 12 hex digits at most, and aliases that people choose are broken
// up by "-", "_" or ":" or are in one case. A data key, a ciphertext or a secret key is
// one run of 32 or more characters in hex or base64.
const minSecretRun = 32

// MaybeSecret reports whether s can be a data key, a ciphertext or a secret key that a
// client sent as a key id or an alias by mistake. Such a value has a run of minSecretRun
// or more letters, digits, "+", "/" and "=" (hex, base64). In base64url the run may also
// hold "-" and "_", and then it must mix upper-case letters, lower-case letters and
// digits. A hex data key of 120 bits or less has 30 digits, too few to tell from a name.
func MaybeSecret(s string) bool {
	strict, loose := 0, 0
	var upper, lower, digit bool
	for i := 0; i < len(s); i++ {
		c := s[i]
		isUpper := 'A' <= c && c <= 'Z'
		isLower := 'a' <= c && c <= 'z'
		isDigit := '0' <= c && c <= '9'
		switch {
		case isUpper || isLower || isDigit || c == '+' || c == '/' || c == '=':
			strict++
			loose++
		case c == '-' || c == '_':
			strict = 0
			loose++
		default:
			strict, loose = 0, 0
			upper, lower, digit = false, false, false
			continue
		}
		upper, lower, digit = upper || isUpper, lower || isLower, digit || isDigit
		if strict >= minSecretRun || loose >= minSecretRun && upper && lower && digit {
			return true
		}
	}
	return false
}
