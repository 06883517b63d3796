package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/internal/gittest"
	"github.com/flotilla-gitops/flotilla/sync/report"
	"github.com/go-git/go-git/v5/plumbing/object"
	"golang.org/x/crypto/ssh"
)

// publishRollout writes the statuses of a rollout of rev to repo: canary-1
// Ready at it, eu-1 waiting for an approval, us-1 waiting for eu-1.
func publishRollout(t *testing.T, repo *gittest.Repo, rev, old string) {
	t.Helper()
	now := time.Now().UTC()
	waves := []string{"canary", "eu", "rest"}
	for _, st := range []*report.Status{
		{Cluster: fleet.Cluster{Name: "canary-1"}, Wave: "canary", Phase: report.ClusterReady, AppliedRevision: rev, SeenRevision: rev, ReadySince: &now,
			Rollout: &report.RolloutStatus{Revision: rev, Waves: waves, State: report.RolloutApplied}},
		{Cluster: fleet.Cluster{Name: "eu-1", Region: "eu-west-1"}, Wave: "eu", Phase: report.ClusterWaiting, AppliedRevision: old, SeenRevision: rev,
			Rollout: &report.RolloutStatus{Revision: rev, Waves: waves, State: report.RolloutWaiting,
				Message: "wave eu waits for an approval of " + rev[:7]}},
		{Cluster: fleet.Cluster{Name: "us-1", Region: "us-east-1"}, Wave: "rest", Phase: report.ClusterWaiting, AppliedRevision: old, SeenRevision: rev,
			Rollout: &report.RolloutStatus{Revision: rev, Waves: waves, State: report.RolloutWaiting, WaitingFor: []string{"eu-1"},
				Message: "wave rest waits for the earlier waves: eu-1"}},
	} {
		r, err := report.New(report.Options{URL: repo.URL})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Publish(context.Background(), st, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRolloutStatusAndApprove: `flotilla status` shows the rollout of the
// revision per wave (table, JSON, HTML); `flotilla rollout approve` pushes
// an approval an agent reads, resolving a short revision, refusing an
// unknown wave, and approving twice changes nothing.
func TestRolloutStatusAndApprove(t *testing.T) {
	repo := gittest.New(t)
	rev, old := strings.Repeat("3f", 20), strings.Repeat("0a", 20)
	publishRollout(t, repo, rev, old)

	var stdout, stderr bytes.Buffer
	if code := run(t.Context(), []string{"status", "--repo", repo.Bare}, &stdout, &stderr); code != exitOK {
		t.Fatalf("status: %s", stderr.String())
	}
	for _, want := range []string{
		`(?m)^rollout of 3f3f3f3, wave by wave:$`,
		`(?m)^canary +1/1 +Done`,
		`(?m)^eu +0/1 +Waiting +wave eu waits for an approval of 3f3f3f3$`,
		`(?m)^rest +0/1 +Waiting +waiting for eu-1$`,
	} {
		if !regexp.MustCompile(want).MatchString(stdout.String()) {
			t.Errorf("status lacks %s:\n%s", want, stdout.String())
		}
	}

	stdout.Reset()
	if code := run(t.Context(), []string{"status", "--repo", repo.Bare, "--cluster", "us-1"}, &stdout, &stderr); code != exitOK ||
		!strings.Contains(stdout.String(), "rollout of 3f3f3f3: Waiting (wave rest waits for the earlier waves: eu-1)") {
		t.Errorf("status --cluster us-1 (%d):\n%s%s", code, stdout.String(), stderr.String())
	}

	stdout.Reset()
	if code := run(t.Context(), []string{"status", "--repo", repo.Bare, "-o", "json"}, &stdout, &stderr); code != exitOK {
		t.Fatalf("status -o json: %s", stderr.String())
	}
	var doc fleetStatus
	if err := json.Unmarshal(stdout.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Clusters) != 3 || doc.Rollout == nil || len(doc.Rollout.Waves) != 3 || doc.Rollout.Waves[0].State != "Done" ||
		doc.Rollout.Waves[2].WaitingFor[0] != "eu-1" {
		t.Errorf("status -o json: %s", stdout.String())
	}

	stdout.Reset()
	if code := run(t.Context(), []string{"status", "--repo", repo.Bare, "-o", "html"}, &stdout, &stderr); code != exitOK {
		t.Fatalf("status -o html: %s", stderr.String())
	}
	if page := stdout.String(); !strings.Contains(page, `<tr data-wave="eu"><td><a href="#" data-set-wave="eu">eu</a></td><td class="num">0/1</td><td class="Waiting">Waiting</td>`) ||
		!strings.Contains(page, "Rollout of 3f3f3f3") {
		t.Errorf("the page lacks the rollout:\n%s", page)
	}

	// Approve eu with a short revision.
	approve := []string{"rollout", "approve", "--repo", repo.Bare, "--wave", "eu", "--revision", "3f3f3f3", "--by", "Ada Lovelace <ada@example.com>", "-m", "canary healthy"}
	stdout.Reset()
	if code := run(t.Context(), approve, &stdout, &stderr); code != exitOK {
		t.Fatalf("rollout approve: %s", stderr.String())
	}
	approvals, err := report.ReadApprovals(context.Background(), repo.URL, "", nil)
	if err != nil || !report.Approved(approvals, "eu", rev, nil) || approvals[0].By != "Ada Lovelace <ada@example.com>" {
		t.Fatalf("approvals %+v, %v", approvals, err)
	}
	if log := gittest.Git(t, repo.Bare, "log", "--format=%an <%ae>|%B", report.DefaultApprovalsBranch); !strings.Contains(log, "Ada Lovelace <ada@example.com>|rollout: approve wave eu for 3f3f3f3") ||
		!strings.Contains(log, "canary healthy") {
		t.Errorf("approvals history:\n%s", log)
	}
	stdout.Reset()
	if code := run(t.Context(), approve, &stdout, &stderr); code != exitOK || !strings.Contains(stdout.String(), "already approved") {
		t.Errorf("approving twice: %d %s %s", code, stdout.String(), stderr.String())
	}
	if n := len(strings.Fields(gittest.Git(t, repo.Bare, "log", "--format=%H", report.DefaultApprovalsBranch))); n != 1 {
		t.Errorf("%d approval commits after approving twice, want 1", n)
	}

	// A rollout halted at the revision: status --wait fails at once, naming
	// where, instead of waiting for its timeout.
	r, err := report.New(report.Options{URL: repo.URL})
	if err != nil {
		t.Fatal(err)
	}
	halted := &report.Status{Cluster: fleet.Cluster{Name: "ap-1"}, Wave: "rest", Phase: report.ClusterWaiting, AppliedRevision: old, SeenRevision: rev,
		Rollout: &report.RolloutStatus{Revision: rev, Waves: []string{"canary", "eu", "rest"}, State: report.RolloutHalted, HaltedBy: "canary-1"}}
	if _, err := r.Publish(context.Background(), halted, time.Now()); err != nil {
		t.Fatal(err)
	}
	stderr.Reset()
	if code := run(t.Context(), []string{"status", "--repo", repo.Bare, "--wait", "--revision", rev, "--timeout", "1m", "--poll", "100ms"}, &stdout, &stderr); code != exitFailed ||
		!strings.Contains(stderr.String(), "failed on ap-1 (rollout halted by canary-1)") {
		t.Errorf("status --wait on a halted rollout: exit %d, %s", code, stderr.String())
	}

	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"--wave", "apac", "--revision", rev}, `wave "apac" is not a wave of the rollout of 3f3f3f3 (canary, eu, rest)`},
		{[]string{"--wave", "eu", "--revision", "beef"}, "revision beef is not one any cluster reports"},
		{[]string{"--wave", "eu", "--revision", rev, "--by", "nobody"}, `give it as "Name <email>"`},
	} {
		stderr.Reset()
		args := append([]string{"rollout", "approve", "--repo", repo.Bare, "--by", "Ada <ada@example.com>"}, bad.args...)
		if code := run(t.Context(), args, &stdout, &stderr); code == exitOK || !strings.Contains(stderr.String(), bad.want) {
			t.Errorf("%v: exit %d, %s; want %q", bad.args, code, stderr.String(), bad.want)
		}
	}
}

// TestApproveOnlyWavesThatAsk: `rollout approve` reads the fleet at the
// revision: a wave that asks for no approval is refused, naming the waves
// that do; one that asks is approved.
func TestApproveOnlyWavesThatAsk(t *testing.T) {
	repo := gittest.New(t)
	rev := repo.Commit(map[string]string{"fleet.cue": `package fleet

clusters: {"canary-1": {}, "eu-1": {region: "eu-west-1"}, "us-1": {region: "us-east-1"}}
rollout: waves: [
	{name: "canary", names: ["canary-*"]},
	{name: "eu", regions: ["eu-*"], approve: true},
	{name: "rest"},
]
bundles: web: resources: []
`})
	publishRollout(t, repo, rev, strings.Repeat("0a", 20))
	approve := func(wave string) (int, string) {
		var stdout, stderr bytes.Buffer
		code := run(t.Context(), []string{"rollout", "approve", "--repo", repo.Bare, "--wave", wave, "--revision", rev[:8], "--by", "Ada <ada@example.com>"}, &stdout, &stderr)
		return code, stdout.String() + stderr.String()
	}
	if code, out := approve("rest"); code == exitOK || !strings.Contains(out, `wave "rest" asks for no approval at `+rev[:7]+`: the waves that do are eu`) {
		t.Errorf("approving a wave that asks for none: exit %d\n%s", code, out)
	}
	if code, out := approve("eu"); code != exitOK || !strings.Contains(out, "approved wave eu") {
		t.Errorf("approving eu: exit %d\n%s", code, out)
	}
}

// sshKey writes an ed25519 SSH key pair: the private key file, and the
// public key as an authorized_keys line.
func sshKey(t *testing.T, comment string) (privateFile, authorized string) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		t.Fatal(err)
	}
	privateFile = filepath.Join(t.TempDir(), "id_ed25519")
	writeTestFile(t, privateFile, string(pem.EncodeToMemory(block)))
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return privateFile, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))) + " " + comment
}

// TestSignedApprovals: when the rollout names approvers, only an approval
// signed by one of their keys lets the wave through. A plain push to the
// approvals branch (any agent's credential can push there, and `by` is
// free text) approves nothing; `rollout approve` refuses to push an
// approval without --signing-key, or signed by a key that is no
// approver's; an approver's signature is accepted, and it is bound to
// its wave and revision (a copy for another wave does not verify).
func TestSignedApprovals(t *testing.T) {
	adaKey, adaPub := sshKey(t, "ada@example.com")
	eveKey, _ := sshKey(t, "eve@example.com")
	repo := gittest.New(t)
	rev := repo.Commit(map[string]string{"fleet.cue": fmt.Sprintf(`package fleet

clusters: {"canary-1": {}, "eu-1": {region: "eu-west-1"}, "us-1": {region: "us-east-1"}}
rollout: {
	approvers: [%q]
	waves: [
		{name: "canary", names: ["canary-*"]},
		{name: "eu", regions: ["eu-*"], approve: true},
		{name: "rest", approve: true},
	]
}
bundles: web: resources: []
`, adaPub)})
	publishRollout(t, repo, rev, strings.Repeat("0a", 20))

	// An unsigned entry pushed straight to the branch, as anyone who can
	// push there could.
	if _, err := report.Approve(t.Context(), report.ApproveOptions{URL: repo.Bare, Author: object.Signature{Name: "agent", Email: "a@b", When: time.Now()}},
		report.Approval{Revision: rev, Wave: "eu", By: "Ada <ada@example.com>", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	read := func() []report.Approval {
		list, err := report.ReadApprovals(t.Context(), repo.Bare, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		return list
	}
	if report.Approved(read(), "eu", rev, []string{adaPub}) {
		t.Fatal("an unsigned approval counts under approvers")
	}

	approve := func(wave string, extra ...string) (int, string) {
		var stdout, stderr bytes.Buffer
		args := append([]string{"rollout", "approve", "--repo", repo.Bare, "--wave", wave, "--revision", rev[:8], "--by", "Ada <ada@example.com>"}, extra...)
		code := run(t.Context(), args, &stdout, &stderr)
		return code, stdout.String() + stderr.String()
	}
	if code, out := approve("eu"); code == exitOK || !strings.Contains(out, "names approvers (rollout.approvers): sign the approval with --signing-key") {
		t.Errorf("an unsigned approval under approvers: exit %d\n%s", code, out)
	}
	if code, out := approve("eu", "--signing-key", "/dev/zero"); code == exitOK || !strings.Contains(out, "larger than any SSH key") {
		t.Errorf("a signing key that never ends: exit %d\n%s", code, out)
	}
	if code, out := approve("eu", "--signing-key", eveKey); code == exitOK || !strings.Contains(out, "not signed by one of the rollout's approvers") {
		t.Errorf("an approval signed by a key that is no approver's: exit %d\n%s", code, out)
	}
	if report.Approved(read(), "eu", rev, []string{adaPub}) {
		t.Fatal("a refused approval was pushed")
	}
	if code, out := approve("eu", "--signing-key", adaKey); code != exitOK || !strings.Contains(out, "approved wave eu") {
		t.Fatalf("an approver's signed approval: exit %d\n%s", code, out)
	}
	list := read()
	if !report.Approved(list, "eu", rev, []string{adaPub}) || report.Approved(list, "rest", rev, []string{adaPub}) {
		t.Fatalf("after the signed approval: %+v", list)
	}
	// The signature covers the wave: moved to another wave, it fails.
	for _, a := range list {
		if a.Signature == "" {
			continue
		}
		moved := a
		moved.Wave = "rest"
		if by, err := report.VerifyApproval(moved, []string{adaPub}); err == nil {
			t.Errorf("a signature moved to another wave verified (by %s)", by)
		}
		// Who, when and why are signed too: the history cannot be
		// rewritten under the signature.
		rewritten := a
		rewritten.By = "Mallory <m@example.com>"
		if _, err := report.VerifyApproval(rewritten, []string{adaPub}); err == nil {
			t.Error("a signed approval verified with another approver's name")
		}
		if by, err := report.VerifyApproval(a, []string{adaPub}); err != nil || by != "ada@example.com" {
			t.Errorf("the signed approval as pushed: %q %v", by, err)
		}
	}
}
