package crypto

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPublicKeyText(t *testing.T) {
	id := mustIdentity(t, 3)
	s := id.Public.String()
	if !strings.HasPrefix(s, PublicKeyPrefix) || len(s) != len(PublicKeyPrefix)+46 {
		t.Fatalf("text form %q", s)
	}
	if strings.ContainsAny(s[len(PublicKeyPrefix):], "+/=:@?#") {
		t.Fatalf("not URL-safe: %q", s)
	}
	p, err := ParsePublicKey(s)
	if err != nil || p != id.Public {
		t.Fatalf("parse: %v", err)
	}
	if p2, err := ParsePublicKey("  " + s + "\n"); err != nil || p2 != id.Public {
		t.Fatal("whitespace not trimmed")
	}
	var u PublicKey
	if err := u.UnmarshalText([]byte(s)); err != nil || u != id.Public {
		t.Fatal(err)
	}
	// Every single-character typo is caught by the checksum or the alphabet.
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	for i := len(PublicKeyPrefix); i < len(s); i++ {
		for _, c := range []byte{'A', 'z', '0', '_'} {
			if c == s[i] {
				continue
			}
			typo := s[:i] + string(c) + s[i+1:]
			if k, err := ParsePublicKey(typo); err == nil && k != id.Public {
				t.Fatalf("typo at %d accepted as another key", i)
			}
		}
	}
	_ = alphabet
	for _, bad := range []string{"", "mxpk_", s[:len(s)-1], s + "A", "mxsk_" + s[5:], strings.Replace(s, "mxpk_", "mxpsk_", 1)} {
		if _, err := ParsePublicKey(bad); !errors.Is(err, ErrMalformed) {
			t.Fatalf("%q accepted: %v", bad, err)
		}
	}
}

func TestPrivateKeyTextAndDerivation(t *testing.T) {
	id := mustIdentity(t, 4)
	back, err := ParsePrivateText(id.MarshalPrivateText())
	if err != nil || back != id {
		t.Fatalf("round trip: %v", err)
	}
	// The private text form is not accepted as a public key and vice versa.
	if _, err := ParsePublicKey(id.MarshalPrivateText()); err == nil {
		t.Fatal("private text parsed as public key")
	}
	if _, err := ParsePrivateText(id.Public.String()); err == nil {
		t.Fatal("public text parsed as private key")
	}
	other := mustIdentity(t, 5)
	if other.Public == id.Public {
		t.Fatal("distinct seeds gave the same key")
	}
}

func TestIdentityFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "identity.key")
	id := mustIdentity(t, 6)
	if err := SaveIdentity(path, &id); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v %v", st.Mode(), err)
	}
	got, err := LoadIdentity(path)
	if err != nil || got != id {
		t.Fatalf("load: %v", err)
	}
	// No overwrite.
	other := mustIdentity(t, 7)
	if err := SaveIdentity(path, &other); !errors.Is(err, ErrKeyFile) {
		t.Fatalf("overwrite: %v", err)
	}
	if got, _ := LoadIdentity(path); got != id {
		t.Fatal("key file was replaced")
	}
	// No temporary files left behind.
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("directory has %d entries", len(entries))
	}
	// Too permissive: refused.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadIdentity(path); !errors.Is(err, ErrKeyFile) {
		t.Fatalf("0644 key accepted: %v", err)
	}
	os.Chmod(path, 0o600)
	// Corrupt content: refused.
	if err := os.WriteFile(path, []byte("mxpsk_garbage\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadIdentity(path); !errors.Is(err, ErrKeyFile) {
		t.Fatalf("corrupt key accepted: %v", err)
	}
	if _, err := LoadIdentity(filepath.Join(dir, "missing")); !errors.Is(err, ErrKeyFile) {
		t.Fatalf("missing file: %v", err)
	}
}

func TestPrivateKeyNotPrinted(t *testing.T) {
	id := mustIdentity(t, 8)
	secretHex := fmt.Sprintf("%x", [32]byte(id.Private))
	for _, s := range []string{
		fmt.Sprint(id), fmt.Sprintf("%v", id), fmt.Sprintf("%+v", id), fmt.Sprintf("%#v", id),
		fmt.Sprintf("%x", id.Private), fmt.Sprintf("%s", id.Private), fmt.Sprintf("%d", id.Private), fmt.Sprintf("%v", &id), fmt.Sprint(&Config{Identity: id}),
	} {
		if strings.Contains(s, secretHex) || strings.Contains(s, secretHex[:16]) {
			t.Fatalf("private key leaked: %s", s)
		}
	}
	if !strings.Contains(fmt.Sprint(id), id.Public.String()) {
		t.Fatal("public key should print in text form")
	}
}
