// notecheck: golang.org/x/mod/sumdb/note (the Go reference of C2SP signed notes) on gpufleet's notes.
//
//	notecheck open VKEY...   reads a signed note on stdin, opens it with note.Open and prints JSON:
//	                         the text, the verified and unverified signatures, the checkpoint's lines.
//	notecheck sign SKEY      reads a note text on stdin and prints note.Sign's signed note.
//	notecheck generate NAME  prints note.GenerateKey's skey and vkey, one a line.
//
// Keys of type 0x04 (C2SP tlog-cosignature/v1) are not in x/mod: for them this file has a Verifier
// written from the C2SP text (Go's crypto/ed25519), which note.Open calls like any other.
// Built by tests/test_notes_interop.py with GO111MODULE=off GOPATH=/usr/share/gocode (Debian packages).
package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

type cosigVerifier struct {
	name string
	hash uint32
	key  ed25519.PublicKey
}

func (v *cosigVerifier) Name() string    { return v.name }
func (v *cosigVerifier) KeyHash() uint32 { return v.hash }
func (v *cosigVerifier) Verify(msg, sig []byte) bool {
	if len(sig) != 8+ed25519.SignatureSize {
		return false
	}
	t := binary.BigEndian.Uint64(sig[:8])
	if t > 1<<63-1 {
		return false
	}
	signed := fmt.Sprintf("cosignature/v1\ntime %d\n", t) + string(msg)
	return ed25519.Verify(v.key, []byte(signed), sig[8:])
}

func verifier(vkey string) (note.Verifier, error) {
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) == 3 {
		raw, err := base64.StdEncoding.DecodeString(parts[2])
		if err == nil && len(raw) == 33 && raw[0] == 0x04 {
			sum := sha256.Sum256(append([]byte(parts[0]+"\n"), raw...))
			hash := binary.BigEndian.Uint32(sum[:4])
			if fmt.Sprintf("%08x", hash) != parts[1] {
				return nil, fmt.Errorf("invalid verifier hash")
			}
			return &cosigVerifier{parts[0], hash, ed25519.PublicKey(raw[1:])}, nil
		}
	}
	return note.NewVerifier(vkey)
}

type sig struct {
	Name string `json:"name"`
	Hash string `json:"hash"`
}

func sigs(list []note.Signature) []sig {
	out := []sig{}
	for _, s := range list {
		out = append(out, sig{s.Name, fmt.Sprintf("%08x", s.Hash)})
	}
	return out
}

func fail(err error) {
	json.NewEncoder(os.Stdout).Encode(map[string]string{"error": err.Error()})
	os.Exit(1)
}

func open(vkeys []string, msg []byte) {
	var list []note.Verifier
	for _, k := range vkeys {
		v, err := verifier(k)
		if err != nil {
			fail(err)
		}
		list = append(list, v)
	}
	n, err := note.Open(msg, note.VerifierList(list...))
	if err != nil {
		fail(err)
	}
	lines := strings.Split(strings.TrimSuffix(n.Text, "\n"), "\n")
	out := map[string]interface{}{"text": n.Text, "verified": sigs(n.Sigs), "unverified": sigs(n.UnverifiedSigs)}
	if len(lines) >= 3 {
		size, err1 := strconv.ParseUint(lines[1], 10, 64)
		root, err2 := base64.StdEncoding.DecodeString(lines[2])
		if err1 == nil && err2 == nil && len(root) == 32 {
			out["checkpoint"] = map[string]interface{}{"origin": lines[0], "size": size,
				"root_hex": fmt.Sprintf("%x", root), "extensions": lines[3:]}
		}
	}
	json.NewEncoder(os.Stdout).Encode(out)
}

func main() {
	if len(os.Args) < 2 {
		fail(fmt.Errorf("usage: notecheck open VKEY... | sign SKEY | generate NAME"))
	}
	switch os.Args[1] {
	case "open":
		msg, err := io.ReadAll(os.Stdin)
		if err != nil {
			fail(err)
		}
		open(os.Args[2:], msg)
	case "sign":
		text, err := io.ReadAll(os.Stdin)
		if err != nil {
			fail(err)
		}
		s, err := note.NewSigner(os.Args[2])
		if err != nil {
			fail(err)
		}
		msg, err := note.Sign(&note.Note{Text: string(text)}, s)
		if err != nil {
			fail(err)
		}
		os.Stdout.Write(msg)
	case "generate":
		skey, vkey, err := note.GenerateKey(rand.Reader, os.Args[2])
		if err != nil {
			fail(err)
		}
		fmt.Printf("%s\n%s\n", skey, vkey)
	default:
		fail(fmt.Errorf("unknown command %q", os.Args[1]))
	}
}
