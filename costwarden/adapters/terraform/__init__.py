"""Terraform plans (``terraform show -json``) → ``resource`` subjects.

One subject per managed resource the plan creates or updates (``include_all=True``: every
managed resource that exists after the apply, no-ops included); data sources and pure deletions
are skipped. Values come from ``change.after``; a plan without ``resource_changes`` falls back to
``planned_values`` (every planned resource: without actions nothing can be left out)::

    >>> plan = {"format_version": "1.2", "resource_changes": [{"address": "aws_instance.web",
    ...     "mode": "managed", "type": "aws_instance", "name": "web", "change": {
    ...     "actions": ["create"], "after": {"instance_type": "p5.48xlarge",
    ...     "tags_all": {"team": "ml"}}, "after_unknown": {}}}]}
    >>> [web] = subjects_from_plan(plan)
    >>> web.kind, web.capacity, web.workload.gpus, dict(web.tags)
    ('aws_instance', 'on-demand', 8.0, {'team': 'ml'})

Tags are the *effective* tags, what billing will see:

* AWS and others: ``tags_all`` (provider ``default_tags`` merged) when the plan knows it, else
  ``tags`` over the provider's ``default_tags`` from ``configuration`` (a constant, or a root
  variable such as ``var.default_tags`` whose value the plan records). ``tags`` may be
  a map, a list of ``{key, value}`` objects (old ``aws_autoscaling_group``) or ``"key:value"``
  strings (Datadog). ASG ``tag`` blocks and launch-template ``tag_specifications[].tags`` are
  merged in (they tag what gets launched, which is what costs; ASG tags with
  ``propagate_at_launch`` false tag only the group and are left out). ``volume_tags`` and EKS node
  ``labels`` are not: they label other objects (EBS volumes, Kubernetes nodes).
* GCP: ``effective_labels``, else ``terraform_labels``, else ``labels`` (``tags`` on GCP are
  network tags). A node pool adds ``node_config[0].resource_labels``, the labels its VMs are
  billed under; ``node_config[0].labels`` are Kubernetes node labels and are left out.
* What the plan cannot show is in the subject's ``unknown_tags``
  (:class:`~costwarden.engine.subjects.UnknownTags`), which rules read to report a tag as not
  judgeable at plan time rather than pass or fail it. A tag whose value is unknown until apply
  (``after_unknown``) is present, with the placeholder value :data:`UNKNOWN_VALUE`, and named in
  ``unknown_tags.values``. A tag map that is unknown as a whole contributes no keys and makes the
  tags ``incomplete`` (any key may be among them); so does a ``tags_all`` unknown while the
  provider's ``default_tags`` are not in the plan (``local.*``, ``merge(...)``; see
  :mod:`.default_tags`, which reads them off the provider's other resources where it can).

Capacity follows what the plan states: a compute resource without a spot option is on-demand
(the provider default), non-compute resources are ``unknown``, and so are instances whose market
options live in a launch template (``aws_instance`` with ``launch_template``, ASGs without a
mixed-instances policy). ``workload.gpus`` counts GPUs, or Inferentia/Trainium chips, from GCE
``guest_accelerator`` blocks or the instance-type tables in :mod:`.workload`; ``replicas`` is a
node group's desired size, a node pool's node count (per zone: times its ``node_locations`` when
the plan knows them), an ASG's desired capacity, else 1. The workload class is ``batch`` for AWS
Batch and SageMaker training, else ``unknown``, unless the tag ``costwarden.dev/workload-class``
(GCP: ``costwarden-workload-class``) names a class.
``tags_pointer`` is None: fixes do not patch plans.
"""

from __future__ import annotations

# plan: the plan walked into subjects (selection, provider configuration, names and regions);
# default_tags: provider default tags the configuration does not hold; tags, capacity, workload:
# what one planned resource carries, costs on and runs; values: reading plan JSON. Names with a
# leading underscore are shared between these modules only.
from costwarden.adapters.terraform.capacity import capacity
from costwarden.adapters.terraform.plan import PROVIDER, is_plan, subjects_from_plan, subjects_from_plan_text
from costwarden.adapters.terraform.tags import UNKNOWN_VALUE, effective_tags
from costwarden.adapters.terraform.workload import WORKLOAD_CLASS_TAGS, accelerators_of, workload

__all__ = [
    "PROVIDER",
    "UNKNOWN_VALUE",
    "WORKLOAD_CLASS_TAGS",
    "accelerators_of",
    "capacity",
    "effective_tags",
    "is_plan",
    "subjects_from_plan",
    "subjects_from_plan_text",
    "workload",
]
