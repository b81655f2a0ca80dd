"""ChatOps: release commands from Slack, DingTalk, Feishu/Lark, WeCom and Microsoft Teams.

`parse` turns chat text into a command, `authz` decides who may run it, one module per platform verifies
and reads deliveries and formats replies, `routes` serves them; `functions.approvals` does the rest.
"""
