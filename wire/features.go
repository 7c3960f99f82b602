package wire

// Feature bits of Hello.Features and Welcome.Features (docs/PROTOCOL.md §10,
// "Feature bits"). A feature is in force only when the server's Welcome
// has its bit.
const (
	// FeatureTunnel (bit 0) marks an additional connection of the client
	// id that carries one tunnel stream (docs/TUNNEL.md): it neither
	// replaces the client's registered connection nor is replaced by it,
	// and the resume stream it opens or resumes is a tunnel stream, whose
	// first message is a tunnel Open, not a session message.
	FeatureTunnel uint64 = 1 << 0
)
