package jsonscan

import (
	"bytes"
	"unicode/utf8"
)

// ValidText reports whether b is valid UTF-8 and every \u escape in it that names a
// UTF-16 surrogate is half of a high-low pair. encoding/json and String replace invalid
// bytes and unpaired surrogates with U+FFFD, so two different bodies can decode to the
// same strings. Callers that bind decoded strings to a ciphertext reject such bodies.
//
// ValidText does not check the JSON syntax. It assumes, as JSON requires, that every
// backslash is inside a string, so it reads each backslash as the start of an escape.
func ValidText(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}

	for i := 0; ; {
		j := bytes.IndexByte(b[i:], '\\')
		if j < 0 {
			return true
		}
		i += j
		if i+1 >= len(b) {
			return true // a syntax error, reported by the decoder
		}
		if b[i+1] != 'u' {
			i += 2 // a two-character escape such as \\ or \"
			continue
		}

		r, ok := escapedUnit(b, i)
		if !ok {
			i += 2 // an invalid escape, reported by the decoder
			continue
		}
		i += 6
		switch {
		case r >= 0xdc00 && r <= 0xdfff:
			return false
		case r >= 0xd800 && r <= 0xdbff:
			low, ok := escapedUnit(b, i)
			if !ok || low < 0xdc00 || low > 0xdfff {
				return false
			}
			i += 6
		}
	}
}

// escapedUnit decodes the \uXXXX escape at b[i:], reporting false when there is none.
func escapedUnit(b []byte, i int) (rune, bool) {
	if i+6 > len(b) || b[i] != '\\' || b[i+1] != 'u' || !isHex4(b[i+2:i+6]) {
		return 0, false
	}

	var r rune
	for _, c := range b[i+2 : i+6] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		default:
			r |= rune(c - 'A' + 10)
		}
	}
	return r, true
}
