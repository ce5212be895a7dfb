package crypto

import (
	"bytes"
	"errors"
	"testing"
)

func TestHandshakeInMemory(t *testing.T) {
	ic, rc := testPeers(t)
	is, rs, _ := handshake(t, ic, rc, 42)
	if is.Suite() != rs.Suite() || !is.Suite().valid() {
		t.Fatalf("suites %v %v", is.Suite(), rs.Suite())
	}
	if is.HandshakeHash() != rs.HandshakeHash() {
		t.Fatal("handshake hashes differ")
	}
	if !is.Peer().Equal(rc.Identity.Public) || !rs.Peer().Equal(ic.Identity.Public) {
		t.Fatal("peers not authenticated as expected")
	}
	if !rs.Confirmed() || !is.Confirmed() {
		t.Fatal("not confirmed")
	}
	// Both directions carry data.
	buf := make([]byte, 2048)
	pkt, pn, err := is.Seal(buf, 0x02, []byte("hello responder"))
	if err != nil || pn != 0 {
		t.Fatal(err, pn)
	}
	o, err := rs.Open(pkt, t0)
	if err != nil || string(o.Payload) != "hello responder" || o.PacketNumber != 0 || o.Flags != 0x02 {
		t.Fatalf("open: %v %+v", err, o)
	}
	pkt, _, err = rs.Seal(buf, 0x04, []byte("hello initiator"))
	if err != nil {
		t.Fatal(err)
	}
	o, err = is.Open(pkt, t0)
	if err != nil || !bytes.Equal(o.Payload, []byte("hello initiator")) {
		t.Fatalf("open: %v %+v", err, o)
	}
}

func TestHandshakeWrongStaticKeyRefused(t *testing.T) {
	ic, rc := testPeers(t)
	resp, err := NewResponder(rc)
	if err != nil {
		t.Fatal(err)
	}
	other := mustIdentity(t, 99)
	ini, err := NewInitiator(ic, other.Public, 7)
	if err != nil {
		t.Fatal(err)
	}
	hello, err := ini.Hello(t0)
	if err != nil {
		t.Fatal(err)
	}
	// mac1 is keyed with the intended responder's key: refused before any DH.
	if _, err := resp.HandleInitiatorHello(hello, testAddr, t0, false); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("wrong responder key: %v", err)
	}
	// Even with a mac1 recomputed for the real responder, Noise refuses.
	m1 := mac(resp.mac1Key[:], hello[:len(hello)-32])
	copy(hello[len(hello)-32:], m1[:])
	if _, err := resp.HandleInitiatorHello(hello, testAddr, t0, false); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("wrong responder key past mac1: %v", err)
	}
}
