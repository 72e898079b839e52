def test_both_stacks_plan_without_error(plans):
    for stack, plan in plans.items():
        assert plan.resources, stack
