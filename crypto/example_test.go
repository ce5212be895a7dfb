package crypto_test

import (
	"fmt"
	"net/netip"
	"time"

	mxpcrypto "github.com/mxp-dataplane/mxp/crypto"
)

// A complete handshake and one protected packet each way, entirely in
// memory: the caller moves the bytes and supplies the time.
func Example() {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	client, _ := mxpcrypto.GenerateIdentity(nil)
	server, _ := mxpcrypto.GenerateIdentity(nil)

	serverCfg := &mxpcrypto.Config{
		Identity:  server,
		Authorize: func(p mxpcrypto.PublicKey) bool { return p == client.Public },
	}
	responder, _ := mxpcrypto.NewResponder(serverCfg)

	// The initiator knows the server's key, e.g. from "mxpk_..." in a URL.
	serverKey, _ := mxpcrypto.ParsePublicKey(server.Public.String())
	initiator, _ := mxpcrypto.NewInitiator(&mxpcrypto.Config{Identity: client}, serverKey, 0xC0FFEE)

	hello, _ := initiator.Hello(now)
	res, err := responder.HandleInitiatorHello(hello, netip.MustParseAddrPort("192.0.2.1:9000"), now, false)
	if err != nil {
		panic(err)
	}
	clientSess, finish, err := initiator.HandleResponderHello(res.Reply, now)
	if err != nil {
		panic(err)
	}
	serverSess := res.Session
	if err := serverSess.HandleInitiatorFinish(finish); err != nil {
		panic(err)
	}

	buf := make([]byte, 0, 1500)
	pkt, pn, _ := clientSess.Seal(buf, 0x02, []byte("call: ping"))
	got, err := serverSess.Open(pkt, now)
	fmt.Println(len(hello) >= 1200, pn, string(got.Payload), err)
	fmt.Println(clientSess.Suite() == serverSess.Suite(), serverSess.Peer() == client.Public)
	// Output:
	// true 0 call: ping <nil>
	// true true
}
