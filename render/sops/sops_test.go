package sops_test

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/flotilla-gitops/flotilla/internal/sopstest"
	"github.com/flotilla-gitops/flotilla/render/sops"
)

const (
	canary      = "hunter2-canary-91c7"
	plainSecret = `apiVersion: v1
kind: Secret
metadata:
  name: db
  namespace: shop
stringData:
  password: ` + canary + `
  user: shop
`
)

func parsed(t *testing.T, data []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal(data, &m); err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	return m
}

// TestDecrypt: a file encrypted with the sops command line decrypts in
// memory with its recipient's identity, to what was encrypted, in YAML and
// JSON; another identity fails naming the file and the recipients, never
// the content; a value changed after encryption fails the MAC.
func TestDecrypt(t *testing.T) {
	right, wrong := sopstest.NewKey(t), sopstest.NewKey(t)
	keys, err := sops.LoadKeyFiles(right.File)
	if err != nil {
		t.Fatal(err)
	}
	other, err := sops.LoadKeyFiles(wrong.File)
	if err != nil {
		t.Fatal(err)
	}
	jsonSecret, err := yaml.YAMLToJSON([]byte(plainSecret))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, plain string }{
		{"secrets/db.yaml", plainSecret},
		{"secrets/db.json", string(jsonSecret)},
	} {
		enc := sopstest.Encrypt(t, tc.name, tc.plain, "", right.Recipient)
		if strings.Contains(string(enc), canary) {
			t.Fatalf("%s: sops left the value in clear", tc.name)
		}
		if !sops.Encrypted(tc.name, enc) || sops.Encrypted(tc.name, []byte(tc.plain)) {
			t.Errorf("%s: Encrypted tells encrypted from plain wrongly", tc.name)
		}
		if got, err := sops.Recipients(tc.name, enc); err != nil || !reflect.DeepEqual(got, []string{right.Recipient}) {
			t.Errorf("%s: recipients %v %v", tc.name, got, err)
		}
		plain, err := sops.Decrypt(tc.name, enc, keys)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !reflect.DeepEqual(parsed(t, plain), parsed(t, []byte(tc.plain))) {
			t.Errorf("%s: decrypted to\n%s", tc.name, plain)
		}
		for _, k := range []*sops.Keys{other, nil} {
			_, err := sops.Decrypt(tc.name, enc, k)
			if !errors.Is(err, sops.ErrDecrypt) || !strings.Contains(err.Error(), tc.name) || !strings.Contains(err.Error(), right.Recipient) {
				t.Errorf("%s with keys %v: %v", tc.name, k.Public(), err)
			}
			if err != nil && (strings.Contains(err.Error(), canary) || strings.Contains(err.Error(), wrong.Identity)) {
				t.Errorf("%s: the error shows a secret: %v", tc.name, err)
			}
		}
	}

	enc := string(sopstest.Encrypt(t, "db.yaml", plainSecret, "", right.Recipient))
	// user's ciphertext swapped for password's: both decrypt, the MAC
	// does not match.
	lines := strings.Split(enc, "\n")
	var pw, user int
	for i, l := range lines {
		switch {
		case strings.HasPrefix(strings.TrimSpace(l), "password: ENC["):
			pw = i
		case strings.HasPrefix(strings.TrimSpace(l), "user: ENC["):
			user = i
		}
	}
	lines[pw], lines[user] = strings.Replace(lines[user], "user:", "password:", 1), strings.Replace(lines[pw], "password:", "user:", 1)
	if _, err := sops.Decrypt("db.yaml", []byte(strings.Join(lines, "\n")), keys); err == nil {
		t.Error("a file changed after encryption decrypted")
	}
}

// TestMask: without keys, an encrypted file shows its structure, a
// placeholder for each encrypted value that changes with the ciphertext,
// and no SOPS metadata.
func TestMask(t *testing.T) {
	key := sopstest.NewKey(t)
	enc := sopstest.Encrypt(t, "db.yaml", plainSecret, "", key.Recipient)
	masked, err := sops.Mask("db.yaml", enc)
	if err != nil {
		t.Fatal(err)
	}
	m := parsed(t, masked)
	if _, ok := m["sops"]; ok || strings.Contains(string(masked), canary) {
		t.Errorf("masked:\n%s", masked)
	}
	data := m["stringData"].(map[string]any)
	if pw, _ := data["password"].(string); !strings.HasPrefix(pw, "sops-encrypted:") {
		t.Errorf("password %q", pw)
	}
	if m["metadata"].(map[string]any)["name"] != "db" {
		t.Errorf("metadata not kept: %v", m["metadata"])
	}
	again, err := sops.Mask("db.yaml", sopstest.Encrypt(t, "db.yaml", plainSecret, "", key.Recipient))
	if err != nil {
		t.Fatal(err)
	}
	if string(again) == string(masked) {
		t.Error("the placeholders did not change with the ciphertext")
	}
}

// TestLoadKeyFiles: a file that is not an age identity file is refused
// without echoing it.
func TestLoadKeyFiles(t *testing.T) {
	key := sopstest.NewKey(t)
	if k, err := sops.LoadKeyFiles(key.File); err != nil || !reflect.DeepEqual(k.Public(), []string{key.Recipient}) {
		t.Errorf("%v %v", k.Public(), err)
	}
	bad := t.TempDir() + "/bad.txt"
	if err := os.WriteFile(bad, []byte("AGE-SECRET-KEY-NOTREALLY-"+canary+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := sops.LoadKeyFiles(bad); err == nil || strings.Contains(err.Error(), canary) {
		t.Errorf("a bad key file: %v", err)
	}
	if _, err := sops.LoadKeyFiles("/nonexistent/keys.txt"); err == nil {
		t.Error("a missing key file was accepted")
	}
}
