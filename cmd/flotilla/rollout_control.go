package main

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/flotilla-gitops/flotilla/internal/errtext"
	"github.com/flotilla-gitops/flotilla/sync/report"
	"github.com/flotilla-gitops/flotilla/sync/source"
)

// controlFlags are the flags every rollout control shares: where the
// approvals branch is, who acts and why.
type controlFlags struct {
	repo, branch string
	auth         source.Auth
	by, reason   string
}

func addControlFlags(cmd *cobra.Command) *controlFlags {
	cf := &controlFlags{}
	fs := cmd.Flags()
	fs.StringVar(&cf.repo, "repo", "", "repository of the approvals branch (`URL` or local path): the fleet repository, or the status repository of an install that keeps the branch there")
	fs.StringVar(&cf.branch, "approvals-branch", report.DefaultApprovalsBranch, "branch holding the approvals and controls")
	addGitAuthFlags(cmd, &cf.auth, "", "")
	fs.StringVar(&cf.by, "by", "", "who acts, as `\"NAME <EMAIL>\"` (default: git config user.name and user.email)")
	fs.StringVar(&cf.reason, "reason", "", "why (`TEXT`), for the clusters' status and the branch's history")
	return cf
}

// update makes the change on the approvals branch, as a commit authored by
// who acts; it returns who that is.
func (cf *controlFlags) update(cmd *cobra.Command, change func(by string) report.Change) (bool, string, error) {
	if cf.repo == "" {
		return false, "", errors.New("--repo is required: the repository of the approvals branch (the fleet repository, or the status repository of an install that keeps it there)")
	}
	repo := repoURL(cf.repo)
	auth, err := cf.auth.Method(repo)
	if err != nil {
		return false, "", err
	}
	author, err := gitAuthor(cf.by, "who acts?")
	if err != nil {
		return false, "", err
	}
	author.When = time.Now()
	by := author.Name + " <" + author.Email + ">"
	changed, err := report.Update(cmd.Context(), report.ApproveOptions{URL: repo, Auth: auth, Branch: cf.branch, Author: author}, change(by))
	return changed, by, err
}

// control is a pause or hold made now by who acts.
func (cf *controlFlags) control(by string, until *time.Time) report.Control {
	return report.Control{By: by, At: time.Now().UTC().Truncate(time.Second), Until: until, Reason: cf.reason}
}

const controlsLong = `The controls live on the approvals branch (flotilla/approvals: in the fleet
repository, where agents see it move in their poll's ref advertisement and
read it only then; or in the status repository of an install that keeps
it there) beside the approvals, in rollout/controls.yaml: each command is a
commit authored by you (--by, default your git config user.name and
user.email), so the branch's history says who stopped what, when and why,
and nobody edits fleet.cue during an incident. Agents read it when they poll
a revision they have not applied in full (and on every drift correction).

A paused or held cluster keeps what it has applied — drift correction
included — and reports Waiting, naming who paused or held it and why; a
bundle new at the tip waits. A control only keeps clusters where they are:
whoever can push the branch can stop a rollout, never make a cluster apply
anything. 'flotilla status' shows the pause and holds at the top.`

func newRolloutPauseCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pause --repo URL [--reason TEXT] [--until TIME]",
		Short: "Stop every cluster from taking a new revision, until resumed",
		Long:  "Pause the fleet's rollout: no cluster takes a revision it has not applied yet.\n\n" + controlsLong,
		Example: `  flotilla rollout pause --repo https://git.example.com/platform/fleet.git \
    --reason "INC-4711: checkout errors in eu"`,
		Args: cobra.NoArgs,
	}
	cf := addControlFlags(cmd)
	until := cmd.Flags().String("until", "", "end the pause by itself at `TIME` (RFC 3339, or a duration from now: 2h)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		end, err := parseUntil(*until)
		if err != nil {
			return err
		}
		_, by, err := cf.update(cmd, func(by string) report.Change { return report.Pause(cf.control(by, end)) })
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "paused the rollout (by %s); flotilla rollout resume ends it\n", by)
		return nil
	}
	return cmd
}

func newRolloutResumeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "resume --repo URL",
		Short:   "End a pause: the clusters take the tip again, wave by wave",
		Long:    "End the rollout's pause (flotilla rollout pause); holds stay.\n\n" + controlsLong,
		Example: `  flotilla rollout resume --repo https://git.example.com/platform/fleet.git --reason "INC-4711 mitigated"`,
		Args:    cobra.NoArgs,
	}
	cf := addControlFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		changed, _, err := cf.update(cmd, func(by string) report.Change { return report.Resume(by, cf.reason) })
		if err != nil {
			return err
		}
		if !changed {
			fmt.Fprintln(cmd.OutOrStdout(), "the rollout was not paused")
			return nil
		}
		fmt.Fprintln(cmd.OutOrStdout(), "resumed the rollout")
		return nil
	}
	return cmd
}

// holdTarget are the flags naming what a hold keeps.
type holdTarget struct{ cluster, bundle string }

func addHoldTarget(cmd *cobra.Command) *holdTarget {
	ht := &holdTarget{}
	cmd.Flags().StringVar(&ht.cluster, "cluster", "", "the cluster `NAME` (every bundle of it)")
	cmd.Flags().StringVar(&ht.bundle, "bundle", "", "the bundle `NAME` (on every cluster, or on --cluster)")
	completeFromFleet(cmd, "cluster", completeClusters)
	completeFromFleet(cmd, "bundle", completeBundles)
	return ht
}

func (ht *holdTarget) validate() error {
	if ht.cluster == "" && ht.bundle == "" {
		return errors.New("--cluster NAME, --bundle NAME, or both: what to hold")
	}
	for _, n := range []string{ht.cluster, ht.bundle} {
		if n == "" {
			continue
		}
		if err := report.ValidateClusterName(n); err != nil {
			return err
		}
	}
	return nil
}

func newRolloutHoldCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "hold --repo URL --cluster NAME | --bundle NAME [--until TIME] [--reason TEXT]",
		Short: "Keep a cluster, a bundle, or a bundle on a cluster out of the rollout",
		Long: "Hold a cluster (every bundle of it), a bundle (on every cluster) or a bundle on\n" +
			"one cluster at what it has, until released or until --until.\n\n" + controlsLong,
		Example: `  flotilla rollout hold --repo https://git.example.com/platform/fleet.git \
    --cluster prod-eu-1 --until 4h --reason "migration window"
  flotilla rollout hold --repo https://git.example.com/platform/fleet.git --bundle payments`,
		Args: cobra.NoArgs,
	}
	cf := addControlFlags(cmd)
	ht := addHoldTarget(cmd)
	until := cmd.Flags().String("until", "", "end the hold by itself at `TIME` (RFC 3339, or a duration from now: 2h)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := ht.validate(); err != nil {
			return err
		}
		end, err := parseUntil(*until)
		if err != nil {
			return err
		}
		var target string
		_, _, err = cf.update(cmd, func(by string) report.Change {
			c := cf.control(by, end)
			c.Cluster, c.Bundle = ht.cluster, ht.bundle
			target = c.Target()
			return report.Hold(c)
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "holding %s; flotilla rollout release ends it\n", target)
		return nil
	}
	return cmd
}

func newRolloutReleaseCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "release --repo URL --cluster NAME | --bundle NAME",
		Short:   "End a hold",
		Long:    "End the hold of exactly this cluster, bundle, or bundle on a cluster.\n\n" + controlsLong,
		Example: `  flotilla rollout release --repo https://git.example.com/platform/fleet.git --cluster prod-eu-1`,
		Args:    cobra.NoArgs,
	}
	cf := addControlFlags(cmd)
	ht := addHoldTarget(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := ht.validate(); err != nil {
			return err
		}
		target := report.Control{Cluster: ht.cluster, Bundle: ht.bundle}.Target()
		changed, _, err := cf.update(cmd, func(by string) report.Change { return report.Release(ht.cluster, ht.bundle, by, cf.reason) })
		if err != nil {
			return err
		}
		if !changed {
			return fmt.Errorf("%s is not held (a hold is released as it was made: the same --cluster and --bundle)", target)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "released %s\n", target)
		return nil
	}
	return cmd
}

// parseUntil reads --until: an RFC 3339 time, or a duration from now.
func parseUntil(s string) (*time.Time, error) {
	if s == "" {
		return nil, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d <= 0 {
			return nil, fmt.Errorf("--until %s: a duration from now must be positive", s)
		}
		t := time.Now().Add(d).UTC().Truncate(time.Second)
		return &t, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return nil, fmt.Errorf("--until %q: give a time as 2026-12-07T18:00:00Z, or a duration from now as 2h", s)
	}
	if !t.After(time.Now()) {
		return nil, fmt.Errorf("--until %s is in the past", s)
	}
	t = t.UTC()
	return &t, nil
}

// writeControls prints the pause and holds in effect, for `flotilla
// status`.
func writeControls(w io.Writer, c report.Controls) {
	if c.Pause != nil {
		fmt.Fprintf(w, "PAUSED %s\n", oneLine(errtext.Clean(c.Pause.Why())))
	}
	for _, h := range c.Holds {
		fmt.Fprintf(w, "HELD %s %s\n", errtext.Clean(h.Target()), oneLine(errtext.Clean(h.Why())))
	}
}
