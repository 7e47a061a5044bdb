"""Direct mode parses what it can exactly and refuses everything else; every call it makes
converts to its catalogue tool's argument type (the gate would refuse it otherwise)."""

from __future__ import annotations

from typing import Any

import pytest

from schemas import catalogue, kubectl
from services.planner import direct

MANIFEST = """apiVersion: v1
kind: ConfigMap
metadata:
  name: app-config
data:
  LOG_LEVEL: debug"""

# Every verb of issue 6, with the exact call it becomes.
VERBS: list[tuple[str, str, dict[str, Any]]] = [
    ("kubectl get pods -n shop", "list", {"kind": "pod", "namespace": "shop"}),
    ("/kubectl get po -n shop", "list", {"kind": "pod", "namespace": "shop"}),
    ("kubectl get deploy -A", "list", {"kind": "deployment", "all_namespaces": True}),
    ("kubectl get pods -l app=web --namespace=shop", "list",
     {"kind": "pod", "namespace": "shop", "label_selector": "app=web"}),
    ("kubectl get deploy/web -n shop", "get",
     {"kind": "deployment", "name": "web", "namespace": "shop"}),
    ("kubectl -n shop get deployment web -o yaml", "get",
     {"kind": "deployment", "name": "web", "namespace": "shop", "output": "yaml"}),
    ("kubectl get nodes", "list", {"kind": "node"}),
    ("kubectl describe deploy/payment-service -n production", "describe",
     {"kind": "deployment", "name": "payment-service", "namespace": "production"}),
    ("kubectl describe node node-1", "describe", {"kind": "node", "name": "node-1"}),
    ("kubectl logs payment-service-7c9f -n production", "logs",
     {"name": "payment-service-7c9f", "namespace": "production"}),
    ("kubectl logs pod/web-1 -c web --tail=50 -p -n shop", "logs",
     {"name": "web-1", "container": "web", "tail_lines": 50, "previous": True,
      "namespace": "shop"}),
    ("kubectl events -n production --for deploy/payment-service --types=Warning", "events",
     {"namespace": "production", "kind": "deployment", "name": "payment-service",
      "warnings_only": True}),
    ("kubectl events -A", "events", {"all_namespaces": True}),
    ("kubectl top pods -n production --containers", "top_pods",
     {"namespace": "production", "containers": True}),
    ("kubectl top nodes", "top_nodes", {}),
    ("kubectl scale deploy/web --replicas=5 -n shop", "scale",
     {"kind": "deployment", "name": "web", "namespace": "shop", "replicas": 5}),
    ("kubectl scale deployment web --replicas 0 -n shop", "scale",
     {"kind": "deployment", "name": "web", "namespace": "shop", "replicas": 0}),
    ("kubectl rollout restart deploy/auth-service -n staging", "rollout_restart",
     {"kind": "deployment", "name": "auth-service", "namespace": "staging"}),
    ("kubectl rollout undo deploy/web --to-revision=2 -n shop", "rollout_undo",
     {"kind": "deployment", "name": "web", "namespace": "shop", "to_revision": 2}),
    ("kubectl rollout status deploy/web -n shop --timeout=1m", "rollout_status",
     {"kind": "deployment", "name": "web", "namespace": "shop", "wait_seconds": 60}),
    ("kubectl rollout history deploy/web -n shop --revision 3", "rollout_history",
     {"kind": "deployment", "name": "web", "namespace": "shop", "revision": 3}),
    ("kubectl set image deploy/web web=nginx:1.27 -n shop", "set_image",
     {"kind": "deployment", "name": "web", "namespace": "shop", "container": "web",
      "image": "nginx:1.27"}),
    ("kubectl set resources deploy/payment-service -c payment-service "
     "--limits=memory=512Mi,cpu=1 --requests=memory=256Mi -n production", "set_resources",
     {"kind": "deployment", "name": "payment-service", "namespace": "production",
      "container": "payment-service", "limits": {"memory": "512Mi", "cpu": "1"},
      "requests": {"memory": "256Mi"}}),
    ("kubectl set env deploy/web LOG_LEVEL=debug OLD_FLAG- -n shop", "set_env",
     {"kind": "deployment", "name": "web", "namespace": "shop", "env": {"LOG_LEVEL": "debug"},
      "remove": ["OLD_FLAG"]}),
    ("kubectl delete pod web-1 -n shop --grace-period=30", "delete",
     {"kind": "pod", "name": "web-1", "namespace": "shop", "grace_period_seconds": 30}),
    ("kubectl delete pvc/data-db-0 -n staging --cascade=foreground", "delete",
     {"kind": "persistentvolumeclaim", "name": "data-db-0", "namespace": "staging",
      "propagation": "foreground"}),
    ("kubectl cordon node-1", "cordon", {"name": "node-1"}),
    ("kubectl uncordon node/node-1", "uncordon", {"name": "node-1"}),
    ("kubectl drain node-1 --ignore-daemonsets --delete-emptydir-data --timeout=5m", "drain",
     {"name": "node-1", "ignore_daemonsets": True, "delete_emptydir_data": True,
      "timeout_seconds": 300}),
    ("kubectl label deploy web -n shop tier=frontend stale- --overwrite", "label",
     {"kind": "deployment", "name": "web", "namespace": "shop",
      "labels": {"tier": "frontend", "stale": None}, "overwrite": True}),
    ("kubectl annotate deploy/web -n shop owner='team payments'", "annotate",
     {"kind": "deployment", "name": "web", "namespace": "shop",
      "annotations": {"owner": "team payments"}}),
    ("kubectl patch deploy/web -n shop -p '{\"spec\": {\"replicas\": 2}}' --type merge", "patch",
     {"kind": "deployment", "name": "web", "namespace": "shop", "patch_type": "merge",
      "body": {"spec": {"replicas": 2}}}),
    (f"kubectl apply -f - -n shop <<EOF\n{MANIFEST}\nEOF", "apply",
     {"namespace": "shop", "manifest": {"apiVersion": "v1", "kind": "ConfigMap",
                                        "metadata": {"name": "app-config"},
                                        "data": {"LOG_LEVEL": "debug"}}}),
    (f"/kubectl apply -f -\n{MANIFEST}", "apply",
     {"manifest": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app-config"},
                   "data": {"LOG_LEVEL": "debug"}}}),
    (f"kubectl create -f - -n shop\n{MANIFEST}", "create",
     {"namespace": "shop", "manifest": {"apiVersion": "v1", "kind": "ConfigMap",
                                        "metadata": {"name": "app-config"},
                                        "data": {"LOG_LEVEL": "debug"}}}),
    ("kubectl cluster-info", "cluster_info", {}),
    ("kubectl auth can-i delete deployments.apps -n shop", "can_i",
     {"verb": "delete", "resource": "deployments", "group": "apps", "namespace": "shop"}),
]


@pytest.mark.parametrize(("text", "tool", "args"), VERBS)
def test_every_verb_parses_into_a_call_the_catalogue_accepts(
    text: str, tool: str, args: dict[str, Any]
) -> None:
    got = direct.parse(text)
    assert got == direct.Call(tool, args)
    catalogue.TOOLS[tool].parse_args(args)  # raises if the gate would refuse it


def test_every_verb_of_the_issue_is_covered() -> None:
    tools = {tool for _, tool, _ in VERBS}
    wanted = {"get", "list", "describe", "logs", "events", "rollout_status", "rollout_history",
              "top_pods", "top_nodes", "scale", "rollout_restart", "rollout_undo", "set_image",
              "set_resources", "set_env", "apply", "create", "delete", "cordon", "uncordon",
              "drain", "label", "annotate", "patch"}
    assert wanted <= tools


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("kubectl get pods -n shop | grep web", "shell syntax"),
        ("kubectl delete ns production; echo", "shell syntax"),
        ("kubectl get pods > out.txt", "shell syntax"),
        ("kubectl get pods -n $(whoami)", "shell syntax"),
        ("kubectl exec -it web -- sh", "exec is not supported"),
        ("kubectl port-forward svc/web 8080", "port-forward is not supported"),
        ("kubectl edit deploy/web", "edit is not supported"),
        ("kubectl scale deploy/web -n shop", "--replicas"),
        ("kubectl scale deploy/web --replicas=five", "whole number"),
        ("kubectl scale deploy --replicas=3", "missing object name"),
        ("kubectl scale deploy/web --replicas=3 --dry-run=client", "--dry-run is not needed"),
        ("kubectl get pods --dry-run=client", "--dry-run is not needed"),
        ("kubectl get widgets", "unsupported resource kind"),
        ("kubectl", "missing verb"),
        ("kubectl get pods -n", "needs a value"),
        ("kubectl get pods 'unterminated", "cannot parse"),
        ("kubectl delete pods --all -n shop", "one named object, or a kind and -l"),
        ("kubectl delete pod web-1 --force --grace-period=0", "--force"),
        ("kubectl delete deploy web api -n shop", "only one object"),
        ("kubectl logs svc/web -n shop", "not a service"),
        ("kubectl set image deploy/web a=x:1 b=y:2", "one container at a time"),
        ("kubectl set resources deploy/web --limits=disk=1Gi", "cpu=…,memory=…"),
        ("kubectl patch deploy/web -p '[{\"op\": \"remove\"}]' --type json", "--type supports"),
        ("kubectl apply -f deploy.yaml", "apply reads no files"),
        ("kubectl apply -f -\napiVersion: v1\nkind: A\nmetadata: {name: a}\n---\n"
         "apiVersion: v1\nkind: B\nmetadata: {name: b}", "exactly one object, not 2"),
        ("kubectl apply -f - <<EOF\napiVersion: v1\nkind: A\nmetadata: {name: a}", "not closed"),
        ("kubectl apply -f -\nkind: [unclosed", "not valid YAML"),
        ("kubectl rollout pause deploy/web", "unsupported rollout subcommand"),
        ("kubectl scale deploy/web --replicas=3 --wat", "unsupported flag '--wat'"),
        ("kubectl frobnicate pods", "unsupported verb 'frobnicate'"),
        ("kubectl scale deploy/Web_Bad --replicas=1", "invalid arguments for scale"),
        ("kubectl scale deploy/web --replicas=-1", "invalid arguments for scale"),
        ("kubectl cordon node-1 -n shop", "no namespace"),
    ],
)
def test_refuses_with_a_clear_reason(text: str, why: str) -> None:
    got = direct.parse(text)
    assert isinstance(got, direct.Refusal), got
    assert why in got.reason


def _outcome(text: str) -> str:
    got = direct.parse(text)
    if isinstance(got, direct.Refusal):
        return "refused"
    return catalogue.TOOLS[got.tool].access


# At least 40 commands as people type them, and what Interlock does with each: a read runs at
# once, a write is held for approval, anything else is refused. The access comes from the
# catalogue (the same table the gate classifies with), not from the parser.
TABLE: list[tuple[str, str]] = [
    ("kubectl get pods", "read"),
    ("kubectl get pods -n production -o wide", "read"),
    ("kubectl get deploy payment-service -n production -o yaml", "read"),
    ("kubectl get svc -A", "read"),
    ("kubectl get events -n production", "read"),
    ("kubectl get secret payment-db-credentials -n production", "read"),
    ("kubectl describe pod payment-service-7c9f -n production", "read"),
    ("kubectl logs payment-service-7c9f -n production --previous", "read"),
    ("kubectl events -n staging", "read"),
    ("kubectl top pods -A", "read"),
    ("kubectl top nodes", "read"),
    ("kubectl rollout status deploy/web -n shop", "read"),
    ("kubectl rollout history deployment/web -n shop", "read"),
    ("kubectl cluster-info", "read"),
    ("kubectl auth can-i create deployments -n shop", "read"),
    ("/kubectl get hpa -n shop", "read"),
    ("kubectl scale deploy/web --replicas=3 -n shop", "write"),
    ("kubectl scale sts/db --replicas=0 -n staging", "write"),
    ("kubectl rollout restart deployment/auth-service -n production", "write"),
    ("kubectl rollout undo deploy/web -n shop", "write"),
    ("kubectl set image deploy/web web=nginx:1.27.1 -n shop", "write"),
    ("kubectl set resources deploy/payment-service --limits=memory=512Mi -n production", "write"),
    ("kubectl set env deploy/web FEATURE_X=on -n shop", "write"),
    ("kubectl delete pod web-1 -n shop", "write"),
    ("kubectl delete namespace staging", "write"),
    ("kubectl cordon node-2", "write"),
    ("kubectl uncordon node-2", "write"),
    ("kubectl drain node-2 --ignore-daemonsets", "write"),
    ("kubectl label node node-2 disk=ssd", "write"),
    ("kubectl annotate deploy/web -n shop kubernetes.io/change-cause='hotfix'", "write"),
    ("kubectl patch deploy/web -n shop -p '{\"spec\": {\"paused\": true}}'", "write"),
    (f"kubectl apply -f -\n{MANIFEST}", "write"),
    ("kubectl get pods | grep payment", "refused"),
    ("kubectl get pods && kubectl delete ns production", "refused"),
    ("kubectl logs web-1 > /tmp/x", "refused"),
    ("kubectl apply -f deploy.yaml --dry-run=server", "refused"),
    ("kubectl scale deploy/web --replicas=3 --dry-run=client", "refused"),
    ("kubectl delete pod web-1 --dry-run=server", "refused"),
    ("kubectl exec -it payment-service-7c9f -- cat /etc/secrets", "refused"),
    ("kubectl exec payment-service-7c9f env", "refused"),
    ("kubectl port-forward svc/payment-service 8080:80", "refused"),
    ("kubectl edit deploy/web -n shop", "refused"),
    ("kubectl attach web-1", "refused"),
    ("kubectl cp web-1:/etc/passwd ./passwd", "refused"),
    ("kubectl proxy", "refused"),
    ("kubectl run debug --image=busybox", "refused"),
    ("kubectl taint nodes node-1 key=value:NoSchedule", "refused"),
    ("kubectl delete pods --all -n production", "refused"),
    ("kubectl delete pods -l app=web -n shop", "write"),
    ("kubectl delete pods -l app=web -A", "refused"),
    ("kubectl delete pod web-1 --force --grace-period=0", "refused"),
    ("kubectl yeet pods", "refused"),
    ("kubectl get widgets", "refused"),
    ("kubectl config use-context prod", "refused"),
    ("kubectl get pods -n $(cat ns)", "refused"),
    ("kubectl scale deploy/web --replicas=many", "refused"),
]


@pytest.mark.parametrize(("text", "expected"), TABLE)
def test_table_of_commands(text: str, expected: str) -> None:
    assert _outcome(text) == expected


def test_the_table_is_big_enough() -> None:
    assert len(TABLE) >= 40
    assert {e for _, e in TABLE} == {"read", "write", "refused"}


# Issue 15: the kubectl forms a new operator types on day one, with kubectl's meaning — a read,
# a write, or a refusal that says why; never silently something else.
FORMS: list[tuple[str, str, dict[str, Any]]] = [
    # label selectors where kubectl takes them
    ("kubectl get deploy --selector app=web -n shop", "list",
     {"kind": "deployment", "namespace": "shop", "label_selector": "app=web"}),
    ("kubectl get pods -l app=web,tier!=db -A", "list",
     {"kind": "pod", "label_selector": "app=web,tier!=db", "all_namespaces": True}),
    ("kubectl top pods -l app=web -n shop", "top_pods",
     {"namespace": "shop", "label_selector": "app=web"}),
    # set-based selectors, quoted as a shell needs them: parentheses inside quotes are the
    # selector's, not shell syntax
    ("kubectl get pods -l 'app in (web,api)' -n shop", "list",
     {"kind": "pod", "namespace": "shop", "label_selector": "app in (web,api)"}),
    ("kubectl get pods -l \"env notin (prod),!canary,tier\" -n shop", "list",
     {"kind": "pod", "namespace": "shop", "label_selector": "env notin (prod),!canary,tier"}),
    # logs -l: a read of the matched pods, prefixed; kubectl's --tail 10 with a selector
    ("kubectl logs -l app=web -n shop", "logs",
     {"selector": "app=web", "namespace": "shop", "tail_lines": 10}),
    ("kubectl logs -l app=web -c web --tail=50 --prefix --max-log-requests 3 -p -n shop", "logs",
     {"selector": "app=web", "namespace": "shop", "tail_lines": 50, "container": "web",
      "max_log_requests": 3, "previous": True}),
    # writes by selector: the kind and the selector, one namespace; the preview lists the set
    ("kubectl delete pods -l app=x -n staging", "delete",
     {"kind": "pod", "selector": "app=x", "namespace": "staging"}),
    ("kubectl delete po --selector='env in (qa,dev),!keep' --grace-period=5 -n staging", "delete",
     {"kind": "pod", "selector": "env in (qa,dev),!keep", "namespace": "staging",
      "grace_period_seconds": 5}),
    ("kubectl delete deploy -l app=x,tier!=db --cascade=foreground -n staging", "delete",
     {"kind": "deployment", "selector": "app=x,tier!=db", "namespace": "staging",
      "propagation": "foreground"}),
    ("kubectl label pods -l app=web tier=front --overwrite -n shop", "label",
     {"kind": "pod", "selector": "app=web", "namespace": "shop", "labels": {"tier": "front"},
      "overwrite": True}),
    ("kubectl label pods -l app=web tier- -n shop", "label",
     {"kind": "pod", "selector": "app=web", "namespace": "shop", "labels": {"tier": None}}),
    ("kubectl annotate deploy -l app=web note=checked -n shop", "annotate",
     {"kind": "deployment", "selector": "app=web", "namespace": "shop",
      "annotations": {"note": "checked"}}),
    ("kubectl scale deploy -l app=web --replicas=2 -n shop", "scale",
     {"kind": "deployment", "selector": "app=web", "namespace": "shop", "replicas": 2}),
    ("kubectl scale sts --selector app=db --replicas 0 -n staging", "scale",
     {"kind": "statefulset", "selector": "app=db", "namespace": "staging", "replicas": 0}),
    ("kubectl rollout restart deploy -l app -n shop", "rollout_restart",
     {"kind": "deployment", "selector": "app", "namespace": "shop"}),
    # TYPE/NAME forms
    ("kubectl logs deploy/web -n shop", "logs",
     {"kind": "deployment", "name": "web", "namespace": "shop"}),
    ("kubectl logs deployment/web --tail=20 -c web -n shop", "logs",
     {"kind": "deployment", "name": "web", "namespace": "shop", "tail_lines": 20,
      "container": "web"}),
    ("kubectl logs sts/db -n staging", "logs",
     {"kind": "statefulset", "name": "db", "namespace": "staging"}),
    ("kubectl logs po/web-1 -n shop", "logs", {"name": "web-1", "namespace": "shop"}),
    ("kubectl get svc/web -n shop", "get", {"kind": "service", "name": "web", "namespace": "shop"}),
    ("kubectl describe sts/db -n staging", "describe",
     {"kind": "statefulset", "name": "db", "namespace": "staging"}),
    ("kubectl get deployments.apps/web -n shop", "get",
     {"kind": "deployment", "name": "web", "namespace": "shop"}),
    # several kinds in one get: one read listing each kind, in the order given
    ("kubectl get deploy,svc -n shop", "list",
     {"kind": "deployment", "namespace": "shop", "more_kinds": ["service"]}),
    ("kubectl get po,deploy,po -l app=web -n shop -o name", "list",
     {"kind": "pod", "namespace": "shop", "more_kinds": ["deployment"],
      "label_selector": "app=web", "output": "name"}),
    # -o honoured by get
    ("kubectl get pods -n shop -o json", "list",
     {"kind": "pod", "namespace": "shop", "output": "json"}),
    ("kubectl get pods -n shop --output=wide", "list",
     {"kind": "pod", "namespace": "shop", "output": "wide"}),
    ("kubectl get deploy -A -o name", "list",
     {"kind": "deployment", "all_namespaces": True, "output": "name"}),
    ("kubectl get deploy/web -n shop -o name", "get",
     {"kind": "deployment", "name": "web", "namespace": "shop", "output": "name"}),
    # create configmap / secret generic / namespace, built as kubectl builds them
    ("kubectl create configmap app-config --from-literal=LOG_LEVEL=debug "
     "--from-literal 'greeting=hello world' -n shop", "create",
     {"namespace": "shop", "manifest": {
         "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app-config"},
         "data": {"LOG_LEVEL": "debug", "greeting": "hello world"}}}),
    ("kubectl create cm empty -n shop", "create",
     {"namespace": "shop", "manifest": {"apiVersion": "v1", "kind": "ConfigMap",
                                        "metadata": {"name": "empty"}}}),
    ("kubectl create secret generic db --from-literal=password=hunter2 -n shop", "create",
     {"namespace": "shop", "manifest": {
         "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"}, "type": "Opaque",
         "data": {"password": "aHVudGVyMg=="}}}),
    ("kubectl create namespace team-a", "create",
     {"manifest": {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}}),
]


@pytest.mark.parametrize(("text", "tool", "args"), FORMS)
def test_day_one_kubectl_forms_parse_into_the_calls_kubectl_means(
    text: str, tool: str, args: dict[str, Any]
) -> None:
    got = direct.parse(text)
    assert got == direct.Call(tool, args)
    catalogue.TOOLS[tool].parse_args(args)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        # a selector where the tool cannot express it: refused, never widened or narrowed
        ("kubectl describe pods -l app=web", "does not support --selector"),
        ("kubectl get deploy/web -l app=web", "cannot be combined"),
        ("kubectl logs web-1 -l app=web -n shop", "name or -l, not both"),
        ("kubectl logs -l app=web --prefix=false", "always prefixes"),
        ("kubectl logs -l app=web -A", "logs -l does not support --all-namespaces"),
        ("kubectl logs -l app=web --max-log-requests=100", "max_log_requests"),
        ("kubectl delete pods/web-1 -l app=web -n shop", "a name cannot be combined with -l"),
        ("kubectl delete pod web-1 -l app=web -n shop", "a name cannot be combined with -l"),
        ("kubectl delete pods,svc -l app=web -n shop", "one kind at a time"),
        ("kubectl delete -l app=web -n shop", "needs a kind"),
        ("kubectl delete ns -l env=qa", "cluster-scoped"),
        ("kubectl label nodes -l pool=a drain=yes", "cluster-scoped"),
        ("kubectl rollout undo deploy -l app=web", "does not support --selector"),
        ("kubectl rollout status deploy -l app=web", "does not support --selector"),
        # several namespaces in one write: refused (each namespace is its own card)
        ("kubectl delete pods -l app=web -A", "several namespaces at once"),
        ("kubectl label pods -l app=web tier=x --all-namespaces", "several namespaces at once"),
        ("kubectl scale deploy -l app=web --replicas=2 -A", "several namespaces at once"),
        ("kubectl rollout restart deploy -l app=web -A", "several namespaces at once"),
        ("kubectl annotate pods -l app=web a=b -A", "several namespaces at once"),
        # --all (every object of a kind): name them or select them
        ("kubectl delete pods --all -n shop", "no --all"),
        ("kubectl delete pods --all -l app=web -n shop", "--all is not supported"),
        ("kubectl scale deploy --all --replicas=0 -n shop", "or a kind and -l"),
        # invalid selectors: a clear refusal, never a different selection
        ("kubectl delete pods -l 'app in ()' -n shop", "invalid selector"),
        ("kubectl delete pods -l 'a b' -n shop", "invalid selector"),
        ("kubectl delete pods -l 'env in (a' -n shop", "unbalanced parentheses"),
        ("kubectl delete pods -l app==web,,x -n shop", "empty requirement"),
        ("kubectl delete pods -l '' -n shop", "-l needs a selector"),
        ("kubectl get pods -l 'Bad Key=x'", "invalid selector"),
        ("kubectl top pods -l 'x in ()'", "invalid selector"),
        ("kubectl logs -l 'app=(web)'", "invalid selector"),
        # quoted text is not shell syntax, but a shell still expands $ and ` inside "…"
        ("kubectl delete pods -l \"app=$(whoami)\" -n shop", "shell syntax"),
        ("kubectl get pods -l 'app in (web)' | grep web", "shell syntax"),
        ("kubectl logs cm/app-config -n shop", "not a configmap"),
        ("kubectl logs deploy/ -n shop", "missing object name"),
        ("kubectl get deploy,svc web -n shop", "several kinds"),
        ("kubectl get deploy,widgets -n shop", "unsupported resource kind 'widgets'"),
        # -o: honoured by get, refused elsewhere, never ignored
        ("kubectl get pods -o jsonpath='{.items[0].metadata.name}'", "-o jsonpath"),
        ("kubectl get pods -o custom-columns=NAME:.metadata.name", "not supported"),
        ("kubectl events -n shop -o json", "events does not support -o"),
        ("kubectl describe deploy/web -o yaml", "describe does not support -o"),
        ("kubectl top pods -o json", "top pods does not support -o"),
        ("kubectl scale deploy/web --replicas=2 -o name", "scale does not support -o"),
        # create: files are on the user's machine, not the server's
        ("kubectl create configmap app --from-file=app.properties", "--from-file reads a file"),
        ("kubectl create configmap app --from-file=cfg=/etc/passwd", "cannot see your files"),
        ("kubectl create secret generic db --from-env-file=.env", "--from-file reads a file"),
        ("kubectl create secret docker-registry reg -n shop", "only create secret generic"),
        ("kubectl create secret generic db --from-literal=pass", "KEY=VALUE"),
        ("kubectl create configmap a --from-literal=k=1 --from-literal=k=2", "already exists"),
        ("kubectl create configmap a b --from-literal=k=1", "exactly one name"),
        ("kubectl create configmap a --from-literal='bad key=1'", "not a valid key"),
        ("kubectl create deployment web -n shop", "create deployment is not supported"),
        ("kubectl get pods --from-literal=a=b", "get does not support --from-literal"),
    ],
)
def test_day_one_forms_refused_with_a_reason(text: str, why: str) -> None:
    got = direct.parse(text)
    assert isinstance(got, direct.Refusal), got
    assert why in got.reason, got.reason


def test_a_secret_literal_is_never_repeated() -> None:
    text = ("kubectl create secret generic db --from-literal=password=hunter2 "
            "--from-literal 'user=ad min' --from-literal=\"k=x y\" -n shop")
    shown = direct.shown(text)
    assert "hunter2" not in shown
    assert "ad min" not in shown
    assert "x y" not in shown
    assert "password=<redacted>" in shown
    assert "user=<redacted>" in shown
    assert "-n shop" in shown
    # a configmap's values are not secret: the command is shown as typed
    assert direct.shown("kubectl create configmap a --from-literal=k=v") == \
        "kubectl create configmap a --from-literal=k=v"


def test_a_secret_command_leaves_no_value_in_the_planner_events() -> None:
    from schemas.session import UserMessage
    from services.planner import domain

    for text in ("kubectl create secret generic db --from-literal=password=hunter2 -n shop",
                 "kubectl create secret generic db --from-literal=password=hunter2 -n shop "
                 "--bogus"):
        trigger = UserMessage(session_id="s1", actor="alice", text=text, event_id="e1")
        out = domain.decide(trigger, [trigger])
        assert out
        # as the planner's handler appends them
        for ev in map(direct.masked, out):
            assert "hunter2" not in repr(ev), ev
            assert ev.event_id in {e.event_id for e in out}
    proposed = direct.masked(domain.decide(UserMessage(
        session_id="s1", actor="alice", text="kubectl create configmap a --from-literal=k=v",
        event_id="e2"), [])[0])
    assert "k=v" in proposed.rationale  # type: ignore[attr-defined]


def test_without_the_word_kubectl_a_command_means_the_same_with_no_model() -> None:
    from schemas.planning import CommandRejected, ToolProposed
    from schemas.session import AssistantMessage, UserMessage
    from services.planner import domain

    def step(text: str, model: bool = False) -> list[object]:
        user = UserMessage(session_id="s_bare", text=text, actor="alice")
        return list(domain.decide(user, [user], model=model))

    bare, full = step("get pods -n shop"), step("kubectl get pods -n shop")
    proposed = [e for e in bare if isinstance(e, ToolProposed)]
    assert proposed
    assert [(p.tool, p.args) for p in proposed] == \
        [(p.tool, p.args) for p in full if isinstance(p, ToolProposed)]
    two = [e for e in step("get pods -n shop\nscale deploy/web --replicas=3 -n shop")
           if isinstance(e, ToolProposed)]
    assert [p.tool for p in two] == ["list", "scale"]
    # A refusal says how it was read; a sentence that is no command still gets the refusal.
    said = step("get pods -n staging --show-labels")
    assert [e for e in said if isinstance(e, CommandRejected)]
    assert "kubectl get pods -n staging --show-labels" in next(
        e.text for e in said if isinstance(e, AssistantMessage))
    # With a model, such a sentence is the model's to read.
    assert step("get pods -n shop", model=True) == []
    assert kubectl.implied("why is web slow?") == "why is web slow?"
    assert kubectl.implied("apply -f - <<EOF\nkind: ConfigMap\nEOF").startswith(
        "kubectl apply -f - <<EOF\n")

