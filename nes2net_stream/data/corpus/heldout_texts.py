"""Spoof texts of the held-out corpus in Spanish, Italian, Russian and Catalan.

Call-centre talk written for this corpus (callers and agents: accounts, appointments, payments,
deliveries, fraud checks), plus templates whose ``{d4}``-style slots become random digits that
each synthesiser reads in its own language. French and English reuse the demo corpus's pools.
"""

from __future__ import annotations

from nes2net_stream.data.corpus.texts import (
    EN_CALL_SENTENCES,
    EN_TEMPLATES,
    FR_CALL_SENTENCES,
    FR_PROMPTS,
    FR_TEMPLATES,
    TextPool,
)

ES_SENTENCES: tuple[str, ...] = (
    "Buenos días, le llamo por un problema con mi factura.",
    "Quisiera saber el saldo de mi cuenta, por favor.",
    "¿Me puede confirmar la cita del martes a las diez?",
    "Mi tarjeta fue rechazada esta mañana y no entiendo por qué.",
    "Necesito cambiar la dirección de envío de mi pedido.",
    "El técnico quedó en llamarme antes del mediodía.",
    "¿Podría deletrear su apellido, por favor?",
    "Perdone, se oye muy mal, ¿me lo puede repetir?",
    "Sí, es correcto, muchas gracias.",
    "No, yo no autoricé ese pago.",
    "Quisiera hablar con un supervisor, por favor.",
    "¿Puedo pagar el resto por transferencia bancaria?",
    "Llámeme al móvil después de las seis de la tarde.",
    "Llamo para informar de un corte de internet en mi casa.",
    "Nuestras oficinas están cerradas los domingos y festivos.",
    "Creo que hay un error en mi último extracto.",
    "Espere un momento, estoy buscando un bolígrafo.",
    "Necesitamos su fecha de nacimiento para verificar su identidad.",
    "Su paquete llegará entre las ocho y las doce.",
    "Quiero dar de baja mi suscripción.",
    "El enlace para cambiar la contraseña no funciona.",
    "Hemos detectado un cargo inusual en su cuenta.",
    "No comparta este código con nadie.",
    "Si usted no realizó esta compra, pulse uno.",
    "Gracias por su llamada, que tenga un buen día.",
    "Su llamada es muy importante para nosotros, no cuelgue.",
)

ES_TEMPLATES: tuple[str, ...] = (
    "Mi número de cuenta es el {d4} {d4}.",
    "Puede llamarme al {d3} {d3} {d3}.",
    "El importe pendiente es de {n} euros.",
    "El código de verificación es {d3} {d3}.",
    "Marque la extensión {d4}.",
    "Mi número de cliente es el {d2} {d3} {d3}.",
)

IT_SENTENCES: tuple[str, ...] = (
    "Buongiorno, la chiamo per un problema con la mia bolletta.",
    "Vorrei conoscere il saldo del mio conto, per favore.",
    "Mi può confermare l'appuntamento di martedì alle dieci?",
    "La mia carta è stata rifiutata stamattina e non capisco perché.",
    "Devo cambiare l'indirizzo di consegna del mio ordine.",
    "Il tecnico doveva richiamarmi prima di mezzogiorno.",
    "Può ripetere il cognome lettera per lettera, per favore?",
    "Scusi, la linea è disturbata, può ripetere?",
    "Sì, è corretto, grazie mille.",
    "No, non ho autorizzato questo pagamento.",
    "Vorrei parlare con un responsabile, per cortesia.",
    "Posso pagare il resto con un bonifico?",
    "Mi richiami sul cellulare dopo le sei di sera.",
    "Chiamo per segnalare un guasto alla linea internet.",
    "I nostri uffici sono chiusi la domenica e nei giorni festivi.",
    "Credo che ci sia un errore nell'ultimo estratto conto.",
    "Aspetti un attimo, cerco una penna.",
    "Ci serve la sua data di nascita per verificare la sua identità.",
    "Il pacco arriverà tra le otto e mezzogiorno.",
    "Vorrei disdire il mio abbonamento.",
    "Il link per reimpostare la password non funziona.",
    "Abbiamo rilevato un addebito insolito sul suo conto.",
    "Non comunichi questo codice a nessuno.",
    "Se non ha effettuato lei questo acquisto, prema uno.",
    "Grazie per aver chiamato, buona giornata.",
    "La sua chiamata è importante per noi, resti in linea.",
)

IT_TEMPLATES: tuple[str, ...] = (
    "Il mio numero di conto è {d4} {d4}.",
    "Può richiamarmi al {d3} {d3} {d4}.",
    "L'importo da pagare è di {n} euro.",
    "Il codice di verifica è {d3} {d3}.",
    "Digiti l'interno {d4}.",
    "Il mio codice cliente è {d2} {d3} {d3}.",
)

RU_SENTENCES: tuple[str, ...] = (
    "Здравствуйте, я звоню по поводу моего счёта.",
    "Я хотел бы узнать баланс моего счёта.",
    "Вы можете подтвердить мою запись на вторник в десять часов?",
    "Сегодня утром мою карту отклонили, и я не понимаю почему.",
    "Мне нужно изменить адрес доставки заказа.",
    "Мастер обещал перезвонить мне до обеда.",
    "Продиктуйте, пожалуйста, вашу фамилию по буквам.",
    "Извините, плохо слышно, повторите, пожалуйста.",
    "Да, всё верно, большое спасибо.",
    "Нет, я не разрешал этот платёж.",
    "Соедините меня, пожалуйста, с руководителем.",
    "Можно оплатить остаток банковским переводом?",
    "Перезвоните мне на мобильный после шести вечера.",
    "Я звоню сообщить, что у меня не работает интернет.",
    "По воскресеньям и праздникам наш офис не работает.",
    "Мне кажется, в последней выписке есть ошибка.",
    "Подождите минутку, я ищу ручку.",
    "Для проверки личности назовите вашу дату рождения.",
    "Ваша посылка прибудет с восьми до двенадцати часов.",
    "Я хочу отказаться от подписки.",
    "Ссылка для смены пароля не работает.",
    "Мы заметили необычное списание с вашего счёта.",
    "Никому не сообщайте этот код.",
    "Если вы не совершали эту покупку, нажмите один.",
    "Спасибо за звонок, всего доброго.",
    "Ваш звонок очень важен для нас, оставайтесь на линии.",
)

RU_TEMPLATES: tuple[str, ...] = (
    "Номер моего счёта {d4} {d4}.",
    "Перезвоните мне по номеру {d3} {d3} {d2} {d2}.",
    "Сумма к оплате {n} рублей.",
    "Код подтверждения {d3} {d3}.",
    "Наберите добавочный номер {d4}.",
)

CA_SENTENCES: tuple[str, ...] = (
    "Bon dia, us truco per un problema amb la meva factura.",
    "Voldria saber el saldo del meu compte, si us plau.",
    "Em podeu confirmar la cita de dimarts a les deu?",
    "Aquest matí m'han rebutjat la targeta i no entenc per què.",
    "He de canviar l'adreça d'entrega de la comanda.",
    "El tècnic havia de trucar-me abans de migdia.",
    "Perdoni, se sent molt malament, ho pot repetir?",
    "Sí, és correcte, moltes gràcies.",
    "No, jo no he autoritzat aquest pagament.",
    "Voldria parlar amb un responsable, si us plau.",
    "Truqueu-me al mòbil després de les sis de la tarda.",
    "Crec que hi ha un error a l'últim extracte.",
    "Necessitem la seva data de naixement per verificar la seva identitat.",
    "El paquet arribarà entre les vuit i les dotze.",
    "Hem detectat un càrrec inusual al seu compte.",
    "No comparteixi aquest codi amb ningú.",
    "Gràcies per la seva trucada, bon dia.",
)

CA_TEMPLATES: tuple[str, ...] = (
    "El meu número de compte és el {d4} {d4}.",
    "El codi de verificació és {d3} {d3}.",
    "L'import pendent és de {n} euros.",
)


def heldout_pools() -> dict[str, TextPool]:
    """A text pool per language code of the held-out corpus."""
    def pool(sentences: tuple[str, ...], templates: tuple[str, ...]) -> TextPool:
        return TextPool([(0.8, sentences)], templates, 0.2)

    return {"es": pool(ES_SENTENCES, ES_TEMPLATES), "it": pool(IT_SENTENCES, IT_TEMPLATES),
            "ru": pool(RU_SENTENCES, RU_TEMPLATES), "ca": pool(CA_SENTENCES, CA_TEMPLATES),
            "fr": TextPool([(0.4, FR_PROMPTS), (0.6, FR_CALL_SENTENCES)], FR_TEMPLATES, 0.15),
            "en": pool(EN_CALL_SENTENCES, EN_TEMPLATES)}
