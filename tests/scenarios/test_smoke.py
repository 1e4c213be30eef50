from tests.harness import ALEX, card_of, card_text, action_id_of, verbs_in


async def test_help_answers_with_usage(bot):
    replies = await bot.say(ALEX, "help")
    assert replies and replies[0].cards
    assert "deprovision <device>" in card_text(replies[0].cards[0])


async def test_deprovision_happy_path(bot, sim):
    replies = await bot.say(ALEX, "deprovision 5CD0832TGL")
    card = replies[-1].cards[0]
    assert verbs_in(card) == ["deprovision.confirm", "deprovision.cancel"], card_text(card)
    action_id = action_id_of(card)
    response = await bot.click(
        ALEX,
        "deprovision.confirm",
        {"actionId": action_id, "reason": "retiring_device"},
        reply_to=replies[-1].activity_id,
    )
    done = card_of(response)
    assert "Deprovisioned" in card_text(done), card_text(done)
    assert len(sim.deprovision_posts()) == 1
