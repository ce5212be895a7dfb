package dptest

import (
	"github.com/mxp-dataplane/mxp/dataplane"
	"github.com/mxp-dataplane/mxp/testnet"
)

// InNetns opens a backend's sockets or rings inside a test host's namespace.
type InNetns struct {
	dataplane.Backend
	Host *testnet.Host
}

func (b *InNetns) Open(cfg dataplane.Config) (conns []dataplane.ShardConn, err error) {
	if e := b.Host.Do(func() error { conns, err = b.Backend.Open(cfg); return err }); e != nil && err == nil {
		err = e
	}
	return conns, err
}
