"""Every prompt LSP sends, as data constants (spec lsp-ilbench.md, section 5: prompts are data, testable with a
0.5B model). Placeholders are ``str.format`` fields; nothing else in the package writes prompt text.

- :data:`MODULE` is an LLM module ``f(x; s)``: the learned rule ``s`` applied to one input, answering one
  item of a closed list (the node's labels), which the prompt gives.
- :data:`MODULE_RETRY` re-asks a module whose answer named no item of the list (a retry within budget).
- :data:`RULESUM` asks the learner LLM to summarise labelled examples into decision rules (RuleSum).
- :data:`RULESUM_RETRY` is appended when the learner's previous answer was not a usable rule.
- :data:`SINGLE_PROMPT_INPUT` is how the APE / MoP baselines see an item: the input plus the closed label
  list, so they know the answers as LSP's modules do.

Example:
    >>> MODULE.format(rule="If the blorp is teal, the label is zand.", input="The blorp is teal.",
    ...               choices="zand, murl")
"""

MODULE = ("Apply the rule below to the description and give its label.\n\n"
          "Rule:\n{rule}\n\n"
          "Description: {input}\n\n"
          "Possible labels: {choices}\n"
          "Answer with exactly one label from the list and nothing else.\n"
          "Label:")

MODULE_RETRY = ("Description: {input}\n"
                "Rule:\n{rule}\n\n"
                "Which one of these labels does the rule give: {choices}? Reply with the label only.")

EXAMPLE = "Description: {input}\nLabel: {label}"

RULESUM = ("Each description below has a label. Find the rules that decide the label from the description.\n\n"
           "{examples}\n\n"
           "The labels are: {labels}.\n"
           "Write the decision rules in plain words, one per line, each like "
           "\"If the <attribute> is <value>, the label is <label>.\" End with a default rule "
           "\"Otherwise, the label is <label>.\"\n"
           "Rules:")

RULESUM_RETRY = ("\n\nYour previous answer was not a usable rule ({reason}). Write rules that name the labels "
                 "{labels}.")

SINGLE_PROMPT_INPUT = "{input} (answer with one of: {choices})"
